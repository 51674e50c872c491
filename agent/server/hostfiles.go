package server

import (
	"context"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sealpod/sealpod/agent/api"
	"github.com/sealpod/sealpod/imagebuilder/spec"
)

// parseHostEnv checks CreateContainerRequest.host_env, the placeholder container's
// environment ("NAME=VALUE", untrusted): at most api.MaxHostEnv entries and
// api.MaxHostEnvBytes in all; a name non-empty without '=' or NUL, a value without NUL. A
// later entry wins, as in an OCI process environment.
func parseHostEnv(in []string) (map[string]string, error) {
	if len(in) > api.MaxHostEnv {
		return nil, invalid("host_env: %d entries (max %d)", len(in), api.MaxHostEnv)
	}
	out := make(map[string]string, len(in))
	total := 0
	for i, kv := range in {
		total += len(kv)
		if total > api.MaxHostEnvBytes {
			return nil, invalid("host_env: more than %d bytes", api.MaxHostEnvBytes)
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" || strings.IndexByte(kv, 0) >= 0 {
			return nil, invalid("host_env[%d]: not NAME=VALUE without NUL", i)
		}
		out[k] = v
	}
	return out, nil
}

// hostFiles checks the bounds of an UpdateHostFilesRequest (the backend checks each path,
// mode and the layout: agent/containers.CheckHostFiles).
func hostFiles(req *api.UpdateHostFilesRequest) ([]HostFile, error) {
	vol := req.GetVolume()
	if !spec.ValidVolumeName(vol) {
		return nil, invalid("update host files: volume %.80q: not a DNS-1123 label", vol)
	}
	fs := req.GetFiles()
	if len(fs) > api.MaxHostFiles {
		return nil, invalid("update host files %s: %d files (max %d)", vol, len(fs), api.MaxHostFiles)
	}
	out := make([]HostFile, len(fs))
	total := 0
	for i, f := range fs {
		total += len(f.GetData())
		if total > api.MaxHostFilesBytes || len(f.GetPath()) > api.MaxHostFilePath {
			return nil, invalid("update host files %s: more than %d bytes, or a path longer than %d", vol, api.MaxHostFilesBytes, api.MaxHostFilePath)
		}
		out[i] = HostFile{Path: f.GetPath(), Mode: f.GetMode(), Data: f.GetData()}
	}
	return out, nil
}

// UpdateHostFiles replaces the content of a host-provided volume (untrusted files the kubelet
// wrote on the host: runtime-created Secrets/ConfigMaps, the service-account token).
func (s *Server) UpdateHostFiles(ctx context.Context, req *api.UpdateHostFilesRequest) (*api.Empty, error) {
	files, err := hostFiles(req)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	_, pod, err := s.sealed()
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	// The backend's errors name the volume and a failure kind only (agent/errkind).
	if err := pod.UpdateHostFiles(ctx, req.GetVolume(), files); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "%v", err)
	}
	return &api.Empty{}, nil
}
