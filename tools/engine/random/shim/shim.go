// Package shim exposes the upstream provider constructor, which lives in an internal package.
// Its import path sits under github.com/terraform-providers/terraform-provider-random, so Go allows it
// to import that module's internal/provider package.
package shim

import (
	tfpf "github.com/hashicorp/terraform-plugin-framework/provider"
	"github.com/terraform-providers/terraform-provider-random/internal/provider"
)

// NewProvider returns the upstream Plugin Framework provider.
func NewProvider() tfpf.Provider {
	return provider.New()
}
