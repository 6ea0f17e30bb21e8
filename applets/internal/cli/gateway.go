package cli

import (
	"log/slog"

	"github.com/narun/narun/applets/internal/config"
)

// WarnUnusedCertificate says at start that the gateway loaded a TLS
// certificate that nothing serves: with cert and key set and
// [gateway.tls] listen = "", HTTPS is off, which the file does not make
// plain.
func WarnUnusedCertificate(log *slog.Logger, gc config.Gateway) {
	if gc.TLS.Cert != "" && gc.TLS.Key != "" && gc.TLS.Listen == "" {
		log.Warn("gateway tls: cert and key are loaded but no TLS listener is configured (gateway.tls.listen is empty), so HTTPS is off",
			"cert", gc.TLS.Cert)
	}
}
