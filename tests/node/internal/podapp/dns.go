package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"time"
)

// resolveNames prints what the resolve mode reports (see the package comment): the resolver
// lines of /etc/resolv.conf, then each name's addresses as the Go resolver finds them through
// that file (search list and ndots applied), retrying each for up to 60 s.
func resolveNames(names []string) {
	b, err := os.ReadFile("/etc/resolv.conf")
	if err != nil {
		fmt.Println("resolv.conf: error: " + err.Error())
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 0 && slices.Contains([]string{"nameserver", "search", "options"}, f[0]) {
			fmt.Println("resolv.conf: " + strings.Join(f, " "))
		}
	}
	for _, name := range names {
		var addrs []string
		var err error
		for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(time.Second) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			addrs, err = net.DefaultResolver.LookupHost(ctx, name)
			cancel()
			if err == nil || time.Now().After(deadline) {
				break
			}
		}
		if err != nil {
			fmt.Printf("resolve %s: error: %v\n", name, err)
			continue
		}
		slices.Sort(addrs)
		fmt.Printf("resolve %s: %s\n", name, strings.Join(addrs, ","))
	}
	fmt.Println("resolve: done")
}
