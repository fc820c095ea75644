// Package examples holds clients of the lakehouse service in other languages
// (node/, python/) and the tests that run them against a real server.
package examples
