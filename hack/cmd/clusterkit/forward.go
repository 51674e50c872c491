package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

type forwardFlags struct{ listen, to string }

// NewForwardCmd relays TCP connections from --listen to --to. The cluster uses it to let pods
// (and sealed guests on the pod network) reach the loopback-only devregistry through the CNI
// bridge's gateway address.
func NewForwardCmd() *cobra.Command {
	f := &forwardFlags{}
	cmd := &cobra.Command{
		Use:     "forward",
		Short:   "Relay TCP connections from one address to another",
		Example: `  clusterkit forward --listen 10.88.0.1:5000 --to 127.0.0.1:5000`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return forward(ctx, f.listen, f.to)
		},
	}
	cmd.Flags().StringVar(&f.listen, "listen", "", "address to listen on")
	cmd.Flags().StringVar(&f.to, "to", "", "address to dial for each connection")
	_ = cmd.MarkFlagRequired("listen")
	_ = cmd.MarkFlagRequired("to")
	return cmd
}

func forward(ctx context.Context, listen, to string) error {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("forward --listen %s: %w", listen, err)
	}
	go func() { <-ctx.Done(); ln.Close() }()
	slog.Info("forwarding", "listen", ln.Addr().String(), "to", to)
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("forward accept on %s: %w", listen, err)
		}
		go func() {
			defer c.Close()
			u, err := net.Dial("tcp", to)
			if err != nil {
				slog.Warn("forward dial", "to", to, "err", err)
				return
			}
			defer u.Close()
			done := make(chan struct{}, 2)
			go func() { _, _ = io.Copy(u, c); closeWrite(u); done <- struct{}{} }()
			go func() { _, _ = io.Copy(c, u); closeWrite(c); done <- struct{}{} }()
			<-done
			<-done
		}()
	}
}

func closeWrite(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
}
