// Package dev holds the local dependencies' configuration: the templates
// scripts/deps.sh renders, and deps.env, their endpoints and probes, which
// the script sources and Go code reads through Env.
package dev

import _ "embed"

// Env is deps.env.
//
//go:embed deps.env
var Env string

// BuildkitNet and BuildkitCNI are the nftables table and the CNI network
// of buildkitd's RUN steps, with @BUILD_BRIDGE@, @BUILD_SUBNET@,
// @BUILD_TABLE@, @BUILD_RESOLVERS4@, @BUILD_CLUSTER4@, @BUILD_CLUSTER6@
// (nft "elements = { … }" lines or nothing) and @STATE@ to fill in. scripts/deps.sh
// renders them locally and zeitwork bootstrap on build hosts: one policy.
var (
	//go:embed buildkitd-net.nft.tmpl
	BuildkitNet string
	//go:embed buildkitd-cni.conflist.tmpl
	BuildkitCNI string
)
