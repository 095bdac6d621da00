// Command pulumi-tfgen-docker generates schema.json and bridge-metadata.json for pulumi-resource-docker.
package main

import (
	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfgen"

	docker "paper-trading-deploy/tools/engine/docker"
	"paper-trading-deploy/tools/engine/docker/version"
)

func main() {
	tfgen.Main("docker", version.Version, docker.Provider(nil))
}
