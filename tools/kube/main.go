// Command kube is a multi-call binary holding the Kubernetes components that
// mdops runs for its local control plane: kube-apiserver and
// kube-controller-manager. One binary shares one compile of the Kubernetes
// packages, which halves the cold build on a small machine. kubectl is built
// on its own from the same module (tools/build-k8s.sh): a multi-call binary
// pays every component's start-up in each kubectl call.
//
// It dispatches on the name it was called by (a symlink named kube-apiserver)
// or on its first argument (kube kube-apiserver ...).
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"k8s.io/component-base/cli"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

var commands = map[string]func() *cobra.Command{
	"kube-apiserver":          apiserver.NewAPIServerCommand,
	"kube-controller-manager": controllermanager.NewControllerManagerCommand,
}

func main() {
	name := filepath.Base(os.Args[0])
	if _, ok := commands[name]; !ok && len(os.Args) > 1 {
		name = os.Args[1]
		os.Args = os.Args[1:]
	}
	newCommand, ok := commands[name]
	if !ok {
		fmt.Fprintln(os.Stderr, "usage: kube {kube-apiserver|kube-controller-manager} [flags]")
		os.Exit(2)
	}
	os.Exit(cli.Run(newCommand()))
}
