// Command etcd is a thin wrapper around etcd's own main package, so etcd 3.6
// can be built from the Go module proxy (go.etcd.io/etcd/server/v3 carries
// relative replace directives, which rule out a plain `go install ...@version`).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
