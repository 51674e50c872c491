//go:build !cgo

package containers

// pauseInC reports whether the C pause (pause_linux.c) is linked in: not without cgo.
const pauseInC = false
