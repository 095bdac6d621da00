// Package shim exposes the upstream provider constructor, which lives in an internal package.
// Its import path sits under github.com/terraform-providers/terraform-provider-docker, so Go allows it
// to import that module's internal/provider package.
package shim

import (
	"github.com/hashicorp/terraform-plugin-sdk/v2/helper/schema"
	"github.com/terraform-providers/terraform-provider-docker/internal/provider"
)

// NewProvider returns the upstream SDKv2 provider.
func NewProvider() *schema.Provider {
	return provider.New("dev")()
}
