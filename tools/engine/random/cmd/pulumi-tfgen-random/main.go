// Command pulumi-tfgen-random generates schema.json and bridge-metadata.json for pulumi-resource-random.
package main

import (
	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/pf/tfgen"

	random "paper-trading-deploy/tools/engine/random"
)

func main() {
	tfgen.Main("random", random.Provider(nil))
}
