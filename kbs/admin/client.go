package admin

import "github.com/sealpod/sealpod/kbs/adminclient"

// The admin API's client side and wire types live in kbs/adminclient (which sealctl imports
// without linking the broker's server side); these names keep the broker's own code, tests
// and tools unchanged.
type (
	APIError            = adminclient.APIError
	Client              = adminclient.Client
	ClientConfig        = adminclient.ClientConfig
	PutResponse         = adminclient.PutResponse
	RemoveResponse      = adminclient.RemoveResponse
	ListResponse        = adminclient.ListResponse
	HistoryResponse     = adminclient.HistoryResponse
	AuditResponse       = adminclient.AuditResponse
	CAInfo              = adminclient.CAInfo
	Status              = adminclient.Status
	ErrorResponse       = adminclient.ErrorResponse
	Revocation          = adminclient.Revocation
	RevokeRequest       = adminclient.RevokeRequest
	RevocationsResponse = adminclient.RevocationsResponse
)

// Constants of the admin API (see kbs/adminclient).
const (
	PathPrefix          = adminclient.PathPrefix
	MaxBodyBytes        = adminclient.MaxBodyBytes
	ClientConfigVersion = adminclient.ClientConfigVersion
)

// Client-side functions (see kbs/adminclient).
var (
	NewClient            = adminclient.NewClient
	NewClientFromConfig  = adminclient.NewClientFromConfig
	ReadClientConfig     = adminclient.ReadClientConfig
	NormalizeSerial      = adminclient.NormalizeSerial
	SerialOf             = adminclient.SerialOf
	RevokeRequestFromPEM = adminclient.RevokeRequestFromPEM
)

// errBadRequest marks a malformed request (answered 400); NormalizeSerial returns it too.
var errBadRequest = adminclient.ErrBadRequest
