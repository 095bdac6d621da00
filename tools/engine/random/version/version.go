// Package version holds the provider version, set with -ldflags "-X .../version.Version=<version>".
package version

var Version = "0.0.0-dev"
