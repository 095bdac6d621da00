// Package docker maps the upstream Terraform docker provider to the Pulumi "docker" package, with the
// tokens and property names that the pulumi-docker SDKs (5.x) use on the wire.
package docker

import (
	"context"
	"runtime"

	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfbridge"
	shimv2 "github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfshim/sdk-v2"
	"github.com/pulumi/pulumi/sdk/v3/go/common/tokens"
	"github.com/terraform-providers/terraform-provider-docker/shim"

	"paper-trading-deploy/tools/engine/docker/version"
)

func res(name string) tokens.Type {
	return tokens.Type("docker:index/" + lowerFirst(name) + ":" + name)
}

func fn(name string) tokens.ModuleMember {
	return tokens.ModuleMember("docker:index/" + name + ":" + name)
}

func lowerFirst(s string) string {
	if s == "" {
		return s
	}
	b := []byte(s)
	if b[0] >= 'A' && b[0] <= 'Z' {
		b[0] += 'a' - 'A'
	}
	return string(b)
}

func defaultHost() string {
	if runtime.GOOS == "windows" {
		return "npipe:////./pipe/docker_engine"
	}
	return "unix:///var/run/docker.sock"
}

// Provider returns the bridge configuration; metadata is the bridge-metadata.json written by tfgen (nil while generating it).
func Provider(bridgeMetadata []byte) tfbridge.ProviderInfo {
	return tfbridge.ProviderInfo{
		P:           shimv2.NewProvider(shim.NewProvider()),
		Name:        "docker",
		Version:     version.Version,
		Description: "A Pulumi package for interacting with Docker in Pulumi programs",
		Keywords:    []string{"pulumi", "docker"},
		License:     "Apache-2.0",
		Homepage:    "https://pulumi.io",
		Repository:  "https://github.com/pulumi/pulumi-docker",
		GitHubOrg:   "kreuzwerker",
		Config: map[string]*tfbridge.SchemaInfo{
			"host": {
				Default: &tfbridge.DefaultInfo{
					EnvVars: []string{"DOCKER_HOST"},
					ComputeDefault: func(context.Context, tfbridge.ComputeDefaultOptions) (interface{}, error) {
						return defaultHost(), nil
					},
				},
			},
			"registry_auth": {Name: "registryAuth", MaxItemsOne: tfbridge.False()},
		},
		Resources: map[string]*tfbridge.ResourceInfo{
			"docker_config": {Tok: res("ServiceConfig")},
			"docker_container": {
				Tok:                 res("Container"),
				DeleteBeforeReplace: true,
				Fields: map[string]*tfbridge.SchemaInfo{
					"command":           {Name: "command"},
					"networks_advanced": {Name: "networksAdvanced"},
				},
			},
			"docker_image": {
				Tok:    res("RemoteImage"),
				Fields: map[string]*tfbridge.SchemaInfo{"name": {Name: "name"}},
			},
			"docker_network":        {Tok: res("Network")},
			"docker_secret":         {Tok: res("Secret")},
			"docker_service":        {Tok: res("Service")},
			"docker_volume":         {Tok: res("Volume")},
			"docker_registry_image": {Tok: res("RegistryImage")},
			"docker_plugin":         {Tok: res("Plugin")},
			"docker_tag":            {Tok: res("Tag")},
			"docker_buildx_builder": {Tok: res("BuildxBuilder")},
		},
		DataSources: map[string]*tfbridge.DataSourceInfo{
			"docker_network":                  {Tok: fn("getNetwork")},
			"docker_registry_image":           {Tok: fn("getRegistryImage")},
			"docker_plugin":                   {Tok: fn("getPlugin")},
			"docker_image":                    {Tok: fn("getRemoteImage")},
			"docker_logs":                     {Tok: fn("getLogs")},
			"docker_registry_image_manifests": {Tok: fn("getRegistryImageManifests")},
		},
		MetadataInfo: tfbridge.NewProviderMetadata(bridgeMetadata),
	}
}
