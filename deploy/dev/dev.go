// Package dev holds the local dependencies' configuration: the templates
// scripts/deps.sh renders, and deps.env, their endpoints and probes, which
// the script sources and Go code reads through Env.
package dev

import _ "embed"

// Env is deps.env.
//
//go:embed deps.env
var Env string
