// Command pulumi-resource-random is the Pulumi random resource provider (bridged Terraform provider).
//
// schema.json and bridge-metadata.json are generated at build time by pulumi-tfgen-random
// (scripts/install-engine); they are not committed.
package main

import (
	"context"
	_ "embed"

	pf "github.com/pulumi/pulumi-terraform-bridge/v3/pkg/pf/tfbridge"

	random "paper-trading-deploy/tools/engine/random"
)

//go:embed schema.json
var pulumiSchema []byte

//go:embed bridge-metadata.json
var bridgeMetadata []byte

func main() {
	meta := pf.ProviderMetadata{PackageSchema: pulumiSchema, BridgeMetadata: bridgeMetadata}
	pf.Main(context.Background(), "random", random.Provider(bridgeMetadata), meta)
}
