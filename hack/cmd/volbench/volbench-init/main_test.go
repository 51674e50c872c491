package main

import "testing"

// procCrypto is in the format of /proc/crypto (written for the test, not captured: two drivers
// of xts(aes) at different priorities, one of hmac(sha256)), shortened to the fields
// bestDriver reads.
const procCrypto = `name         : xts(aes)
driver       : xts(aes-generic)
module       : kernel
priority     : 100

name         : xts(aes)
driver       : xts-aes-aesni
module       : kernel
priority     : 401

name         : hmac(sha256)
driver       : hmac(sha256-generic)
module       : kernel
priority     : 100
`

func TestBestDriver(t *testing.T) {
	for name, want := range map[string]string{
		"xts(aes)":     "xts-aes-aesni",
		"hmac(sha256)": "hmac(sha256-generic)",
		"sha512":       "unknown",
	} {
		if got := bestDriver(procCrypto, name); got != want {
			t.Errorf("bestDriver(%s) = %q, want %q", name, got, want)
		}
	}
}
