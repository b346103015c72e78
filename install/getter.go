package install

import (
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/rest"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"k8s.io/client-go/tools/clientcmd"
)

// namespacedGetter pins the namespace Helm's kube client puts namespaced
// objects in that carry none, which is the release namespace, whatever -n
// the user gave (each component has its own namespace).
type namespacedGetter struct {
	genericclioptions.RESTClientGetter
	namespace string
}

func (g namespacedGetter) ToRawKubeConfigLoader() clientcmd.ClientConfig {
	return namespacedClientConfig{inner: g.RESTClientGetter.ToRawKubeConfigLoader(), namespace: g.namespace}
}

type namespacedClientConfig struct {
	inner     clientcmd.ClientConfig
	namespace string
}

func (c namespacedClientConfig) RawConfig() (clientcmdapi.Config, error) { return c.inner.RawConfig() }
func (c namespacedClientConfig) ClientConfig() (*rest.Config, error)     { return c.inner.ClientConfig() }
func (c namespacedClientConfig) Namespace() (string, bool, error)        { return c.namespace, true, nil }
func (c namespacedClientConfig) ConfigAccess() clientcmd.ConfigAccess    { return c.inner.ConfigAccess() }
