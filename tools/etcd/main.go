// Command etcd is the etcd server, built from its Go module at a pinned
// version. etcd's server module carries replace directives, so it cannot be
// installed with `go install module@version`; this wrapper calls its entry
// point instead.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
