//go:build linux && cgo

package containers

// The pause process starts as a C constructor (pause_linux.c) when the agent is built with cgo,
// as it always is (libseccomp): it never starts the Go runtime, whose start and the agent's
// package initialisation cost hundreds of milliseconds under emulation on every pod start. Go's
// pause() (init.go) remains for builds without cgo.

// #cgo CFLAGS: -Wall -Werror -O2
import "C"

// pauseInC reports whether the C pause is linked in.
const pauseInC = true
