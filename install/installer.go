package install

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"path"
	"reflect"
	"slices"
	"strings"
	"time"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/release"
	"helm.sh/helm/v3/pkg/storage/driver"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/isoobs/isoobs/install/values"
)

// Labels isoobs puts on what it creates, so uninstall removes exactly that.
const (
	// LabelManaged marks Helm releases (storage labels), namespaces and Secrets isoobs created.
	LabelManaged = "isoobs.io/managed"
	// LabelAdopted marks a release someone else installed that isoobs took over with --adopt;
	// uninstall leaves it in place.
	LabelAdopted = "isoobs.io/adopted"
	// LabelChartDigest is ChartDigest of the chart a release was last installed from.
	LabelChartDigest = "isoobs.io/chart-digest"
	// StateSecret keeps the user's --set/-f overrides per component between runs. A Secret,
	// not a ConfigMap, because overrides may hold credentials.
	StateSecret = "isoobs-install-state"
)

// Options is one `kubectl isoobs install` run.
type Options struct {
	Values     values.Options
	Components []Component
	Sources    map[Component]Source
	// Overrides are this run's --set/-f values; they are merged over the ones saved by earlier
	// runs (unless ResetOverrides), so an upgrade keeps what the user set before.
	Overrides      Overrides
	ResetOverrides bool
	DryRun         bool
	ShowValues     bool
	Wait           bool
	Timeout        time.Duration
	Adopt          bool
	// SplunkToken is the Splunk Observability access token; it only ever goes into a Secret.
	SplunkToken string
	// KubeVersion overrides the cluster's version for rendering (tests, offline dry runs).
	KubeVersion string
	// HubbleAddressAuto says the user did not choose the daemon's Hubble address: on a cluster
	// that runs no Cilium (and does not get it in this run) the daemon is installed with Hubble
	// off, so it neither waits for nor mounts a Cilium directory that will never exist.
	HubbleAddressAuto bool
}

// Installer talks to one cluster.
type Installer struct {
	getter genericclioptions.RESTClientGetter
	client kubernetes.Interface
	out    io.Writer
	// helmLog receives the Helm SDK's debug log (discarded unless set). It never sees values.
	helmLog action.DebugLog
	// pollInterval is how often --wait looks at the workloads.
	pollInterval time.Duration
}

// New returns an installer for the cluster getter points at; progress goes to out.
func New(getter genericclioptions.RESTClientGetter, out io.Writer) (*Installer, error) {
	cfg, err := getter.ToRESTConfig()
	if err != nil {
		return nil, fmt.Errorf("reading the kubeconfig: %w", err)
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &Installer{getter: getter, client: client, out: out, helmLog: func(string, ...any) {}, pollInterval: time.Second}, nil
}

// SetHelmLog routes the Helm SDK's debug log.
func (i *Installer) SetHelmLog(log func(format string, args ...any)) { i.helmLog = log }

// step is one component's plan.
type step struct {
	spec    Spec
	chart   *chart.Chart
	digest  string
	values  map[string]any
	current *release.Release // nil: not installed
	foreign bool             // installed by someone else
	action  string           // install, upgrade, unchanged, adopt
	reason  string
}

// Result says what a run did per component.
type Result struct {
	Actions map[Component]string
}

// Install installs or upgrades the chosen components. With DryRun it only
// reads from the cluster and prints the manifests.
func (i *Installer) Install(ctx context.Context, o Options) (_ *Result, err error) {
	// Secrets never leave through what install prints or returns: values are redacted where
	// shown, and every secret string seen is scrubbed from errors (Helm's and the API's included).
	red := newRedactor(o.SplunkToken)
	defer func() { err = red.err(err) }()
	if err := o.Values.Validate(); err != nil {
		return nil, err
	}
	if len(o.Components) == 0 {
		o.Components = DefaultComponents(o.Values.Edition, o.Values.Pipeline)
	}
	if slices.Contains(o.Components, ComponentSplunk) && o.SplunkToken == "" {
		return nil, errors.New("the splunk pipeline needs a Splunk Observability access token: pass --splunk-token-file FILE or set SPLUNK_ACCESS_TOKEN (it is stored only in the Secret " + values.NamespaceSplunk + "/" + o.Values.Splunk.TokenSecretName + ")")
	}
	// Charts first: an unreachable repository or a bad --chart-dir fails before the cluster is read.
	charts, err := loadCharts(ctx, o)
	if err != nil {
		return nil, err
	}
	kubeVersion, apiVersions, err := i.discover(ctx, o.KubeVersion)
	if err != nil {
		return nil, err
	}
	o.Values.PrometheusOperator = slices.Contains(apiVersions, "monitoring.coreos.com/v1/ServiceMonitor")
	if o.HubbleAddressAuto && slices.Contains(o.Components, ComponentIsoobs) && !slices.Contains(o.Components, ComponentCilium) &&
		strings.HasPrefix(o.Values.HubbleAddress, "unix://") {
		if addr, why := i.ciliumHubbleSocket(ctx, o.Values.HubbleAddress); addr != o.Values.HubbleAddress {
			fmt.Fprintf(i.out, "isoobs: %s\n", why)
			o.Values.HubbleAddress = addr
		}
	}

	saved, err := i.loadState(ctx)
	if err != nil {
		return nil, err
	}
	overrides := Overrides{}
	if !o.ResetOverrides {
		for c, v := range saved {
			overrides[c] = v
		}
	}
	for c, v := range o.Overrides {
		overrides[c] = MergeValues(MergeValues(map[string]any{}, overrides[c]), v)
	}
	for _, v := range overrides {
		red.values(v) // remembers the secrets the user set (--set, -f, earlier runs)
	}

	steps, err := i.plan(o, charts, overrides, kubeVersion, apiVersions)
	if err != nil {
		return nil, err
	}
	if o.ShowValues {
		for _, s := range steps {
			data, err := yaml.Marshal(red.values(s.values))
			if err != nil {
				return nil, err
			}
			fmt.Fprintf(i.out, "# %s: release %s/%s, chart %s %s\n%s---\n", s.spec.Component, s.spec.Namespace, s.spec.Release, s.chart.Name(), s.chart.Metadata.Version, data)
		}
		if !o.DryRun {
			return &Result{Actions: map[Component]string{}}, nil
		}
	}
	for _, s := range steps {
		red.values(s.values)
		if s.current != nil {
			red.values(s.current.Config)
		}
	}
	for _, s := range steps {
		if s.foreign && !o.Adopt {
			diff, err := valuesDiff(red, s.current.Config, s.values)
			if err != nil {
				return nil, err
			}
			return nil, fmt.Errorf("%s is already installed by someone else (release %s/%s, chart %s, revision %d); values it would change:\n%s\nre-run with --adopt to let isoobs manage it (uninstall will then leave it in place), or leave it out with --components",
				s.spec.Component, s.spec.Namespace, s.spec.Release, s.current.Chart.Metadata.Version, s.current.Version, diff)
		}
	}
	if o.DryRun {
		return i.dryRun(red, steps, o, kubeVersion, apiVersions)
	}
	res := &Result{Actions: map[Component]string{}}
	for _, s := range steps {
		act, err := i.apply(ctx, s, o)
		if err != nil {
			return res, err
		}
		res.Actions[s.spec.Component] = act
		if o.Wait && act != "unchanged" {
			if err := i.wait(ctx, s.spec, o.Timeout); err != nil {
				return res, err
			}
		}
	}
	stored := Overrides{}
	for c, v := range overrides {
		if len(v) > 0 {
			stored[c] = v
		}
	}
	if !reflect.DeepEqual(stored, saved) {
		if err := i.saveState(ctx, stored); err != nil {
			return res, err
		}
	}
	return res, nil
}

// ciliumHubbleSocket is the Hubble address for the daemons on a cluster whose Cilium isoobs does
// not install in this run: Cilium's own hubble-socket-path (cilium-config) when that socket has a
// directory of its own, else "off", with why. When it cannot tell (no permission to read
// DaemonSets or cilium-config) it keeps def.
func (i *Installer) ciliumHubbleSocket(ctx context.Context, def string) (string, string) {
	list, err := i.client.AppsV1().DaemonSets("").List(ctx, metav1.ListOptions{LabelSelector: "k8s-app=cilium", Limit: 1})
	if err != nil {
		return def, ""
	}
	if len(list.Items) == 0 {
		return "off", "no Cilium in this cluster (no DaemonSet labeled k8s-app=cilium): the daemons run without Hubble (eBPF probes only); " +
			"add Cilium with `kubectl isoobs install --components cilium,isoobs` or point them at a Hubble server with --hubble-address"
	}
	ns := list.Items[0].Namespace
	cm, err := i.client.CoreV1().ConfigMaps(ns).Get(ctx, "cilium-config", metav1.GetOptions{})
	if err != nil {
		return def, ""
	}
	if cm.Data["enable-hubble"] == "false" {
		return "off", "Cilium runs with Hubble disabled (" + ns + "/cilium-config enable-hubble: false): the daemons run without Hubble (eBPF probes only)"
	}
	sock := cm.Data["hubble-socket-path"]
	if sock == "" {
		sock = "/var/run/cilium/hubble.sock" // Cilium's default
	}
	if dir := path.Dir(path.Clean(sock)); CiliumRunDirExposed(dir) {
		return "off", fmt.Sprintf("Cilium's Hubble socket %s is in %s, beside cilium.sock (the agent's API) and the monitor sockets; the daemons never mount that directory, "+
			"so they run without Hubble (eBPF probes only). To merge Hubble flows, give the socket a directory of its own: "+
			"helm upgrade cilium -n %s --reuse-values --set hubble.socketPath=%s --set extraHostPathMounts[0].name=hubble-socket,extraHostPathMounts[0].hostPath=%s,extraHostPathMounts[0].mountPath=%s,extraHostPathMounts[0].hostPathType=DirectoryOrCreate "+
			"(or let isoobs manage Cilium: --components cilium,isoobs --adopt), then install again; or use --hubble-address HOST:PORT",
			sock, dir, ns, values.HubbleSocketPath, values.HubbleSocketDir, values.HubbleSocketDir)
	}
	return "unix://" + sock, "Cilium's Hubble socket is " + sock + " (" + ns + "/cilium-config hubble-socket-path): the daemons mount its directory only"
}

// CiliumRunDirExposed says whether mounting dir would expose more of Cilium's run directory than
// Hubble's socket: the run directory itself (/var/run/cilium = /run/cilium), a directory above it,
// or one of Cilium's own directories in it. The chart's isoobs.checkHostPath applies the same rule.
func CiliumRunDirExposed(dir string) bool {
	p := path.Clean(dir)
	n := p
	if p == "/var/run" || strings.HasPrefix(p, "/var/run/") {
		n = "/run" + strings.TrimPrefix(p, "/var/run")
	}
	return p == "/" || strings.HasPrefix("/var/run/cilium/", p+"/") || strings.HasPrefix("/run/cilium/", n+"/") ||
		slices.Contains([]string{"/run/cilium/state", "/run/cilium/envoy", "/run/cilium/hubble"}, n)
}

// discover reads the cluster's version and API resources (for
// .Capabilities and the ServiceMonitor decision).
func (i *Installer) discover(ctx context.Context, kubeVersion string) (string, []string, error) {
	dc := i.client.Discovery()
	if kubeVersion == "" {
		v, err := dc.ServerVersion()
		if err != nil {
			return "", nil, fmt.Errorf("cannot reach the cluster's API server: %w (check --kubeconfig/--context, or render offline with --dry-run --kube-version v1.34.4)", err)
		}
		kubeVersion = v.GitVersion
	}
	_, lists, err := dc.ServerGroupsAndResources()
	if err != nil && len(lists) == 0 {
		return "", nil, fmt.Errorf("listing the cluster's API resources: %w", err)
	}
	var apiVersions []string
	for _, l := range lists {
		apiVersions = append(apiVersions, l.GroupVersion)
		for _, r := range l.APIResources {
			apiVersions = append(apiVersions, l.GroupVersion+"/"+r.Kind)
		}
	}
	return kubeVersion, apiVersions, nil
}

// loadCharts loads every chosen component's chart (all of them, so every
// unreachable repository is named at once) and prepares the monitoring chart.
func loadCharts(ctx context.Context, o Options) (map[Component]*chart.Chart, error) {
	specs := Specs(o.Values.Edition)
	charts := map[Component]*chart.Chart{}
	needed := slices.Clone(o.Components)
	if slices.Contains(needed, ComponentPrometheus) && !slices.Contains(needed, ComponentCilium) {
		needed = append(needed, ComponentCilium) // the dashboards come from the Cilium chart
	}
	var loadErrs []error
	for _, c := range needed {
		ch, err := LoadChart(ctx, specs[c], o.Sources[c])
		if err != nil {
			loadErrs = append(loadErrs, err)
			continue
		}
		charts[c] = ch
	}
	if err := errors.Join(loadErrs...); err != nil {
		return nil, err
	}
	if mon := charts[ComponentPrometheus]; mon != nil {
		cfg, err := values.PrometheusConfig(o.Values)
		if err != nil {
			return nil, err
		}
		if err := PrepareMonitoringChart(mon, charts[ComponentCilium], cfg); err != nil {
			return nil, err
		}
	}
	return charts, nil
}

func (i *Installer) plan(o Options, charts map[Component]*chart.Chart, overrides Overrides, kubeVersion string, apiVersions []string) ([]*step, error) {
	specs := Specs(o.Values.Edition)
	var steps []*step
	for _, c := range o.Components {
		spec := specs[c]
		vals, err := FinalValues(c, o.Values, overrides)
		if err != nil {
			return nil, err
		}
		// Render now: bad values (schema, --set typos) fail before anything is installed.
		if _, err := Render(charts[c], spec, vals, kubeVersion, apiVersions); err != nil {
			return nil, err
		}
		s := &step{spec: spec, chart: charts[c], digest: ChartDigest(charts[c]), values: vals}
		cur, err := i.currentRelease(spec)
		if err != nil {
			return nil, err
		}
		s.current = cur
		switch {
		case cur == nil:
			s.action = "install"
		case cur.Labels[LabelManaged] != "true":
			s.foreign, s.action = true, "adopt"
		default:
			same, err := sameRelease(cur, s)
			if err != nil {
				return nil, err
			}
			if same {
				s.action = "unchanged"
			} else {
				s.action = "upgrade"
			}
		}
		steps = append(steps, s)
	}
	return steps, nil
}

// sameRelease: deployed, same chart contents, same values. Manifests are not
// compared: the Cilium chart renders fresh TLS material on every run.
func sameRelease(cur *release.Release, s *step) (bool, error) {
	if cur.Info == nil || cur.Info.Status != release.StatusDeployed || cur.Labels[LabelChartDigest] != s.digest {
		return false, nil
	}
	old, err := normalize(cur.Config)
	if err != nil {
		return false, err
	}
	return reflect.DeepEqual(old, s.values), nil
}

func (i *Installer) helmConfig(namespace string) (*action.Configuration, error) {
	cfg := new(action.Configuration)
	if err := cfg.Init(namespacedGetter{i.getter, namespace}, namespace, "secret", i.helmLog); err != nil {
		return nil, fmt.Errorf("helm: %w", err)
	}
	return cfg, nil
}

// currentRelease returns the release's latest revision, or nil.
func (i *Installer) currentRelease(spec Spec) (*release.Release, error) {
	cfg, err := i.helmConfig(spec.Namespace)
	if err != nil {
		return nil, err
	}
	rel, err := cfg.Releases.Last(spec.Release)
	if errors.Is(err, driver.ErrReleaseNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%s: reading release %s/%s: %w", spec.Component, spec.Namespace, spec.Release, err)
	}
	if rel.Info != nil && rel.Info.Status == release.StatusUninstalled {
		return nil, nil
	}
	return rel, nil
}

func (i *Installer) apply(ctx context.Context, s *step, o Options) (string, error) {
	name := fmt.Sprintf("%s (%s/%s, chart %s %s)", s.spec.Component, s.spec.Namespace, s.spec.Release, s.chart.Name(), s.chart.Metadata.Version)
	if s.action == "unchanged" {
		fmt.Fprintf(i.out, "%s: unchanged, revision %d\n", name, s.current.Version)
		return "unchanged", nil
	}
	if err := i.ensureNamespace(ctx, s.spec.Namespace); err != nil {
		return "", err
	}
	if s.spec.Component == ComponentSplunk {
		if err := i.ensureTokenSecret(ctx, o); err != nil {
			return "", err
		}
	}
	cfg, err := i.helmConfig(s.spec.Namespace)
	if err != nil {
		return "", err
	}
	labels := map[string]string{LabelManaged: "true", LabelChartDigest: s.digest}
	timeout := o.Timeout
	if timeout == 0 {
		timeout = 5 * time.Minute
	}
	var rel *release.Release
	switch s.action {
	case "install":
		inst := action.NewInstall(cfg)
		inst.ReleaseName, inst.Namespace, inst.Labels, inst.Timeout = s.spec.Release, s.spec.Namespace, labels, timeout
		rel, err = inst.RunWithContext(ctx, s.chart, s.values)
	case "upgrade", "adopt":
		if s.action == "adopt" {
			labels[LabelAdopted] = "true"
		} else if s.current.Labels[LabelAdopted] == "true" {
			labels[LabelAdopted] = "true"
		}
		up := action.NewUpgrade(cfg)
		up.Namespace, up.Labels, up.Timeout, up.MaxHistory = s.spec.Namespace, labels, timeout, 10
		// Values are always computed afresh for the chart being installed; old ones are never reused
		// across chart versions (the user's overrides come back through the state Secret).
		up.ResetValues = true
		rel, err = up.RunWithContext(ctx, s.spec.Release, s.chart, s.values)
	}
	if err != nil {
		return "", fmt.Errorf("%s: helm %s: %w", name, s.action, err)
	}
	verb := map[string]string{"install": "installed", "upgrade": "upgraded", "adopt": "adopted and upgraded"}[s.action]
	fmt.Fprintf(i.out, "%s: %s, revision %d\n", name, verb, rel.Version)
	return s.action, nil
}

// Pod Security admission labels (https://kubernetes.io/docs/concepts/security/pod-security-admission/).
const (
	LabelPodSecurityEnforce = "pod-security.kubernetes.io/enforce"
	LabelPodSecurityWarn    = "pod-security.kubernetes.io/warn"
)

// PrivilegedNamespaces are the namespaces whose node agents baseline refuses, with why. They are
// labeled to enforce (and warn at) the privileged Pod Security level, so their DaemonSets are
// admitted on clusters that enforce baseline or restricted by default; the audit level is left to
// the cluster's default, so audit logs still record what the daemons do beyond baseline.
var PrivilegedNamespaces = map[string]string{
	values.NamespaceIsoobs:   "the isoobs daemon mounts hostPaths (cgroup root, its socket dir, Hubble's socket dir) and adds CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN, which baseline forbids",
	values.NamespaceTetragon: "Tetragon's agent runs privileged with hostPID and hostPath mounts",
	values.NamespaceSplunk:   "the Splunk collector's agent uses hostNetwork and hostPath mounts",
}

func namespaceLabels(name string) map[string]string {
	l := map[string]string{LabelManaged: "true"}
	if _, ok := PrivilegedNamespaces[name]; ok {
		l[LabelPodSecurityEnforce], l[LabelPodSecurityWarn] = "privileged", "privileged"
	}
	return l
}

func (i *Installer) ensureNamespace(ctx context.Context, name string) error {
	cur, err := i.client.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
	if err == nil {
		return i.ensurePodSecurity(ctx, cur)
	}
	if !apierrors.IsNotFound(err) {
		return fmt.Errorf("reading namespace %s: %w", name, err)
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: namespaceLabels(name)}}
	if _, err := i.client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating namespace %s: %w", name, err)
	}
	return nil
}

// ensurePodSecurity labels an existing namespace that needs the privileged level and has no
// enforce label of its own, and refuses one whose enforce label someone set to another level:
// lowering a level an administrator chose is theirs to decide.
func (i *Installer) ensurePodSecurity(ctx context.Context, ns *corev1.Namespace) error {
	why, ok := PrivilegedNamespaces[ns.Name]
	if !ok {
		return nil
	}
	switch level, set := ns.Labels[LabelPodSecurityEnforce]; {
	case level == "privileged":
		return nil
	case set:
		return fmt.Errorf("namespace %s enforces the %q Pod Security level (label %s), but %s: its pods would be refused. "+
			"Label it privileged (kubectl label namespace %s %s=privileged --overwrite) if that is acceptable here, or leave this component out with --components",
			ns.Name, level, LabelPodSecurityEnforce, why, ns.Name, LabelPodSecurityEnforce)
	}
	if ns.Labels == nil {
		ns.Labels = map[string]string{}
	}
	ns.Labels[LabelPodSecurityEnforce] = "privileged"
	if _, set := ns.Labels[LabelPodSecurityWarn]; !set {
		ns.Labels[LabelPodSecurityWarn] = "privileged"
	}
	if _, err := i.client.CoreV1().Namespaces().Update(ctx, ns, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("labeling namespace %s %s=privileged: %w", ns.Name, LabelPodSecurityEnforce, err)
	}
	fmt.Fprintf(i.out, "namespace %s: labeled %s=privileged (%s)\n", ns.Name, LabelPodSecurityEnforce, why)
	return nil
}

// tokenSecret is the Secret the splunk-otel-collector chart reads the access
// token from (secret.create=false).
func tokenSecret(o Options, token string) *corev1.Secret {
	return &corev1.Secret{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{Name: o.Values.Splunk.TokenSecretName, Namespace: values.NamespaceSplunk, Labels: map[string]string{LabelManaged: "true"}},
		Type:       corev1.SecretTypeOpaque,
		StringData: map[string]string{values.SplunkTokenKey: token},
	}
}

func (i *Installer) ensureTokenSecret(ctx context.Context, o Options) error {
	want := tokenSecret(o, o.SplunkToken)
	secrets := i.client.CoreV1().Secrets(values.NamespaceSplunk)
	cur, err := secrets.Get(ctx, want.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = secrets.Create(ctx, want, metav1.CreateOptions{})
	case err == nil:
		if string(cur.Data[values.SplunkTokenKey]) == o.SplunkToken {
			return nil
		}
		cur.Data = map[string][]byte{values.SplunkTokenKey: []byte(o.SplunkToken)}
		_, err = secrets.Update(ctx, cur, metav1.UpdateOptions{})
	}
	if err != nil {
		// Never include the Secret itself in the error.
		return fmt.Errorf("writing the Splunk token Secret %s/%s: %v", values.NamespaceSplunk, want.Name, apierrors.ReasonForError(err))
	}
	return nil
}

// dryRun prints what would be applied: every component's manifests, as
// rendered now against the cluster's version and APIs. Nothing is written.
func (i *Installer) dryRun(red *redactor, steps []*step, o Options, kubeVersion string, apiVersions []string) (*Result, error) {
	res := &Result{Actions: map[Component]string{}}
	for _, s := range steps {
		res.Actions[s.spec.Component] = s.action
		fmt.Fprintf(i.out, "# %s: would %s release %s/%s (chart %s %s)\n", s.spec.Component, s.action, s.spec.Namespace, s.spec.Release, s.chart.Name(), s.chart.Metadata.Version)
		if s.action == "unchanged" {
			continue
		}
		if s.spec.Component == ComponentSplunk {
			sec := tokenSecret(o, "<redacted: from --splunk-token-file or SPLUNK_ACCESS_TOKEN>")
			data, err := yaml.Marshal(sec)
			if err != nil {
				return nil, err
			}
			fmt.Fprintf(i.out, "---\n# Source: kubectl-isoobs (token Secret)\n%s", data)
		}
		rel, err := Render(s.chart, s.spec, s.values, kubeVersion, apiVersions)
		if err != nil {
			return nil, err
		}
		fmt.Fprint(i.out, red.manifest(rel.Manifest))
		for _, h := range rel.Hooks {
			fmt.Fprintf(i.out, "# Source: %s (hook)\n%s", h.Path, red.manifest(h.Manifest))
		}
	}
	return res, nil
}

func (i *Installer) loadState(ctx context.Context) (Overrides, error) {
	sec, err := i.client.CoreV1().Secrets(values.NamespaceIsoobs).Get(ctx, StateSecret, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return Overrides{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s/%s: %w", values.NamespaceIsoobs, StateSecret, err)
	}
	out := Overrides{}
	for k, data := range sec.Data {
		m := map[string]any{}
		if err := yaml.Unmarshal(data, &m); err != nil {
			return nil, fmt.Errorf("%s/%s key %s: %w (delete the Secret or pass --reset-overrides)", values.NamespaceIsoobs, StateSecret, k, err)
		}
		out[Component(k)] = m
	}
	return out, nil
}

func (i *Installer) saveState(ctx context.Context, ov Overrides) error {
	if err := i.ensureNamespace(ctx, values.NamespaceIsoobs); err != nil {
		return err
	}
	data := map[string][]byte{}
	for _, c := range slices.Sorted(maps.Keys(ov)) {
		b, err := yaml.Marshal(ov[c])
		if err != nil {
			return err
		}
		data[string(c)] = b
	}
	secrets := i.client.CoreV1().Secrets(values.NamespaceIsoobs)
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: StateSecret, Namespace: values.NamespaceIsoobs, Labels: map[string]string{LabelManaged: "true"}}, Data: data}
	cur, err := secrets.Get(ctx, StateSecret, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = secrets.Create(ctx, sec, metav1.CreateOptions{})
	} else if err == nil {
		cur.Data = data
		_, err = secrets.Update(ctx, cur, metav1.UpdateOptions{})
	}
	if err != nil {
		return fmt.Errorf("saving the overrides in %s/%s: %w", values.NamespaceIsoobs, StateSecret, err)
	}
	return nil
}

// valuesDiff is a unified diff of two values trees as YAML, secrets redacted; secrets that
// differ are named by path below it.
func valuesDiff(red *redactor, old, new map[string]any) (string, error) {
	a, err := yaml.Marshal(red.values(old))
	if err != nil {
		return "", err
	}
	b, err := yaml.Marshal(red.values(new))
	if err != nil {
		return "", err
	}
	diff := unifiedDiff("installed values", "isoobs values", string(a), string(b))
	if changed := changedSecrets(old, new); len(changed) > 0 {
		diff += "secret values that differ (not shown): " + strings.Join(changed, ", ") + "\n"
	}
	return red.text(diff), nil
}
