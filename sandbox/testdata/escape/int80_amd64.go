package main

// int80 makes system call nr of the 32-bit x86 ABI, through int 0x80, and
// returns its result, a negated errno on failure.
func int80(nr uintptr) uintptr
