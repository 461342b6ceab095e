// Command kube is a multi-call binary holding the Kubernetes components that
// mdops runs for its local control plane: kube-apiserver,
// kube-controller-manager and kubectl. One binary shares one compile of the
// Kubernetes packages, which halves the cold build on a small machine.
//
// It dispatches on the name it was called by (a symlink named kubectl) or on
// its first argument (kube apiserver ...).
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"k8s.io/component-base/cli"
	kubectl "k8s.io/kubectl/pkg/cmd"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

var commands = map[string]func() *cobra.Command{
	"kube-apiserver":          apiserver.NewAPIServerCommand,
	"kube-controller-manager": controllermanager.NewControllerManagerCommand,
	"kubectl":                 kubectl.NewDefaultKubectlCommand,
}

func main() {
	name := filepath.Base(os.Args[0])
	if _, ok := commands[name]; !ok && len(os.Args) > 1 {
		name = os.Args[1]
		os.Args = os.Args[1:]
	}
	newCommand, ok := commands[name]
	if !ok {
		fmt.Fprintln(os.Stderr, "usage: kube {kube-apiserver|kube-controller-manager|kubectl} [flags]")
		os.Exit(2)
	}
	os.Exit(cli.Run(newCommand()))
}
