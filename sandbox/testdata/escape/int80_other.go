//go:build !amd64

package main

import "golang.org/x/sys/unix"

// int80 fails as a kernel without the 32-bit x86 entry would: there is
// none but on amd64.
func int80(uintptr) uintptr {
	errno := uintptr(unix.ENOSYS)
	return -errno
}
