// Command etcd is etcd's own server entry point, built at the version
// k8s.io/kubernetes pins, because Debian's etcd-server (3.4) is older than
// what this kube-apiserver supports.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
