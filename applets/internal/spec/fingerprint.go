package spec

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
)

// Fingerprint identifies what a process of this app on a node of the given
// arch is made of: binary digest, version, args, env, mode, sandbox,
// resources, files, secrets, the HTTP port and restarted_at. Routes, health, restart
// policy, stop settings, replicas, node selection and the binaries of other
// arches are left out, so changing them restarts nothing. The runner
// restarts an instance exactly when its fingerprint changes.
func (a *App) Fingerprint(arch string) string {
	in := struct {
		Name      string            `json:"name"`
		Version   string            `json:"version"`
		Binary    Binary            `json:"binary"`
		Args      []string          `json:"args"`
		Env       map[string]string `json:"env"`
		Mode      string            `json:"mode"`
		Sandbox   Sandbox           `json:"sandbox"`
		Resources Resources         `json:"resources"`
		Files     []File            `json:"files"`
		Secrets   []Secret          `json:"secrets"`
		HTTP      HTTP              `json:"http"`
		Restarted string            `json:"restarted_at,omitempty"`
	}{a.Name, a.Version, a.Binaries[arch], a.Args, a.Env, a.Mode, a.Sandbox, a.Resources, a.Files, a.Secrets, a.HTTP, a.RestartedAt}
	// json.Marshal sorts map keys, so equal specs hash equally.
	b, err := json.Marshal(in)
	if err != nil {
		// Only unsupported values (NaN) fail, and validation refuses them.
		return "invalid"
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}
