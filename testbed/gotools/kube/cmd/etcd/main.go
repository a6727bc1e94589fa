// Command etcd is etcd's own server entry point, built at the version k8s.io/kubernetes pins.
// Debian bookworm's etcd-server is 3.4.23: kube-apiserver 1.37 starts on it, but Kubernetes
// supports etcd 3.5 and newer only, and 3.4 before 3.4.31 lacks the watch progress fix that
// consistent reads from the watch cache depend on. Building the pinned etcd costs a minute.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
