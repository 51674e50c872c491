// Package api is the agent API (docs/agent.md#api): the protobuf messages and the ttrpc service
// generated from agent.proto (run `make generate` after editing it; the tools are installed by
// hack/install-protoc-tools.sh), plus limits and decoders shared by the agent and the shim.
package api

//go:generate protoc --proto_path=. --go_out=. --go_opt=paths=source_relative --go-ttrpc_out=. --go-ttrpc_opt=paths=source_relative agent.proto
