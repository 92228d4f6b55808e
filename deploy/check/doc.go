// Package check holds the deploy checks; see its tests.
package check
