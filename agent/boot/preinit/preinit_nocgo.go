//go:build !(linux && cgo)

// Package preinit: without cgo there is no C first stage; the agent's Go first stage
// (boot.RunFromSealedCopy) makes the sealed copy.
package preinit

// Linked reports whether the C first stage is in the binary.
const Linked = false
