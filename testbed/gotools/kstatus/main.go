// kstatus prints how sigs.k8s.io/cli-utils' kstatus library — what Flux's `wait: true`, kpt and
// Config Sync use to decide whether a resource is ready — reads one Kubernetes object: the
// object as JSON on stdin (e.g. `kubectl get hw web -o json`), the status (InProgress, Failed,
// Current, Terminating, NotFound, Unknown) and its message on stdout, tab-separated.
package main

import (
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

func main() {
	data, err := io.ReadAll(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kstatus: reading stdin:", err)
		os.Exit(2)
	}
	// Decoded as the API machinery decodes objects (integers stay integers).
	object := &unstructured.Unstructured{}
	if err := object.UnmarshalJSON(data); err != nil {
		fmt.Fprintln(os.Stderr, "kstatus: stdin is not a Kubernetes object in JSON:", err)
		os.Exit(2)
	}
	result, err := status.Compute(object)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kstatus:", err)
		os.Exit(1)
	}
	fmt.Printf("%s\t%s\n", result.Status, result.Message)
}
