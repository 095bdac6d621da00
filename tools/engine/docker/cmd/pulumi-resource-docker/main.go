// Command pulumi-resource-docker is the Pulumi docker resource provider (bridged Terraform provider).
//
// schema.json and bridge-metadata.json are generated at build time by pulumi-tfgen-docker
// (scripts/install-engine); they are not committed.
package main

import (
	_ "embed"

	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfbridge"

	docker "paper-trading-deploy/tools/engine/docker"
	"paper-trading-deploy/tools/engine/docker/version"
)

//go:embed schema.json
var pulumiSchema []byte

//go:embed bridge-metadata.json
var bridgeMetadata []byte

func main() {
	tfbridge.Main("docker", version.Version, docker.Provider(bridgeMetadata), pulumiSchema)
}
