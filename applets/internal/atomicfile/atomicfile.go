// Package atomicfile replaces files so that a crash or a full disk leaves
// either the old content or the new one, never a mix or an empty file.
package atomicfile

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Write replaces path with data: it writes a temporary file beside path,
// syncs it, gives it mode, renames it over path and syncs the directory,
// so that the new name survives a power cut too.
func Write(path string, data []byte, mode os.FileMode) error {
	tmp, err := writeTemp(path, data, mode)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	return replace(tmp, path)
}

// replace renames the temporary file tmp over path and syncs the
// directory.
func replace(tmp, path string) error {
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("replace %s: %w", path, err)
	}
	return SyncDir(filepath.Dir(path))
}

// Leftovers lists the temporary files that writes of path left beside it
// when a crash or a power cut ended them before their rename. Only a
// process that knows no write of path is under way may remove them.
func Leftovers(path string) ([]string, error) {
	dir := filepath.Dir(path)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list %s for the leftovers of writes of %s: %w", dir, path, err)
	}
	prefix := tempPrefix(path)
	var left []string
	for _, e := range entries {
		if e.Type().IsRegular() && strings.HasPrefix(e.Name(), prefix) {
			left = append(left, filepath.Join(dir, e.Name()))
		}
	}
	return left, nil
}

// tempPrefix starts the name of every temporary file of a write of path.
func tempPrefix(path string) string { return "." + filepath.Base(path) + ".tmp-" }

// writeTemp writes data, synced and with mode, to a new temporary file
// beside path and returns its name; the file is gone when it fails.
func writeTemp(path string, data []byte, mode os.FileMode) (string, error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), tempPrefix(path)+"*")
	if err != nil {
		return "", fmt.Errorf("create a temporary file for %s: %w", path, err)
	}
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), mode)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	return tmp.Name(), nil
}

// SyncDir writes dir's entries to disk, so that a file just renamed into
// it keeps its name after a power cut.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open %s to sync it: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
