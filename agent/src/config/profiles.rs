//! The built-in controller profiles (`profile:` in a controller entry).

use super::*;

/// A built-in controller profile (`profile:` in a controller entry): defaults for reload, mode,
/// probe ports and, for API-driven controllers with conventional labels, the selector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BuiltinProfile {
    Nginx,
    Haproxy,
    Traefik,
    Caddy,
    Envoy,
    IngressNginx,
    HaproxyIngress,
    TraefikCrd,
    Contour,
    Istio,
    EnvoyGateway,
    NginxGatewayFabric,
    IstioGateway,
    ContourGateway,
}

impl BuiltinProfile {
    /// Every profile, in documentation order.
    pub const ALL: [BuiltinProfile; 14] = [
        BuiltinProfile::Nginx,
        BuiltinProfile::Haproxy,
        BuiltinProfile::Traefik,
        BuiltinProfile::Caddy,
        BuiltinProfile::Envoy,
        BuiltinProfile::IngressNginx,
        BuiltinProfile::HaproxyIngress,
        BuiltinProfile::TraefikCrd,
        BuiltinProfile::Contour,
        BuiltinProfile::Istio,
        BuiltinProfile::EnvoyGateway,
        BuiltinProfile::NginxGatewayFabric,
        BuiltinProfile::IstioGateway,
        BuiltinProfile::ContourGateway,
    ];

    /// The name written after `profile:`.
    pub fn name(self) -> &'static str {
        match self {
            BuiltinProfile::Nginx => "nginx",
            BuiltinProfile::Haproxy => "haproxy",
            BuiltinProfile::Traefik => "traefik",
            BuiltinProfile::Caddy => "caddy",
            BuiltinProfile::Envoy => "envoy",
            BuiltinProfile::IngressNginx => "ingress-nginx",
            BuiltinProfile::HaproxyIngress => "haproxy-ingress",
            BuiltinProfile::TraefikCrd => "traefik-crd",
            BuiltinProfile::Contour => "contour",
            BuiltinProfile::Istio => "istio",
            BuiltinProfile::EnvoyGateway => "envoy-gateway",
            BuiltinProfile::NginxGatewayFabric => "nginx-gateway-fabric",
            BuiltinProfile::IstioGateway => "istio-gateway",
            BuiltinProfile::ContourGateway => "contour-gateway",
        }
    }

    /// The profile called `name` (exact, lower case).
    pub fn from_name(name: &str) -> Option<BuiltinProfile> {
        BuiltinProfile::ALL.into_iter().find(|p| p.name() == name)
    }

    /// Where the controller reads certificates from.
    pub fn mode(self) -> ReloadMode {
        match self {
            BuiltinProfile::Nginx
            | BuiltinProfile::Haproxy
            | BuiltinProfile::Traefik
            | BuiltinProfile::Caddy
            | BuiltinProfile::Envoy => ReloadMode::Files,
            BuiltinProfile::IngressNginx
            | BuiltinProfile::HaproxyIngress
            | BuiltinProfile::TraefikCrd
            | BuiltinProfile::Contour
            | BuiltinProfile::Istio
            | BuiltinProfile::EnvoyGateway
            | BuiltinProfile::NginxGatewayFabric
            | BuiltinProfile::IstioGateway
            | BuiltinProfile::ContourGateway => ReloadMode::Api,
        }
    }

    /// The default reload action.
    pub fn reload(self) -> ReloadAction {
        let signal = |signal, process: &str| ReloadAction::Signal {
            signal,
            process: Some(process.to_string()),
            go: GoSignalPolicy::Refuse,
        };
        match self {
            // Each profile sends only what its controller implements as a graceful reload.
            // nginx: SIGHUP to the master re-reads the configuration and certificates.
            BuiltinProfile::Nginx => signal(ReloadSignal::Hup, "nginx: master process"),
            // HAProxy master-worker (-W/-Ws): SIGUSR2 to the master reloads. Telling the master
            // from the workers (same title) is the process lookup's job.
            BuiltinProfile::Haproxy => signal(ReloadSignal::Usr2, "haproxy"),
            // Traefik v3's file provider re-applies its configuration on SIGHUP; v2, and v3
            // without the file provider, exit on it: the process must prove it is the former.
            BuiltinProfile::Traefik => ReloadAction::Signal {
                signal: ReloadSignal::Hup,
                process: Some("traefik".to_string()),
                go: GoSignalPolicy::TraefikV3FileProvider,
            },
            BuiltinProfile::Caddy => ReloadAction::Http {
                url: "http://{podIP}:2019/load".to_string(),
            },
            BuiltinProfile::Envoy
            | BuiltinProfile::IngressNginx
            | BuiltinProfile::HaproxyIngress
            | BuiltinProfile::TraefikCrd
            | BuiltinProfile::Contour
            | BuiltinProfile::Istio
            | BuiltinProfile::EnvoyGateway
            | BuiltinProfile::NginxGatewayFabric
            | BuiltinProfile::IstioGateway
            | BuiltinProfile::ContourGateway => ReloadAction::None,
        }
    }

    /// Default probe ports: the TLS container port of the usual manifests / Helm charts.
    pub fn ports(self) -> Vec<u16> {
        match self {
            // Traefik's chart (websecure), Contour's Envoy and Istio's gateway listen on 8443
            // inside the pod; their Services map 443 to it.
            BuiltinProfile::TraefikCrd | BuiltinProfile::Contour | BuiltinProfile::Istio => {
                vec![8443]
            }
            // Envoy Gateway adds 10000 to listener ports below 1024 (443 → 10443).
            BuiltinProfile::EnvoyGateway => vec![10443],
            // Contour's provisioner adds 8000 to listener ports (443 → 8443).
            BuiltinProfile::ContourGateway => vec![8443],
            // NGINX Gateway Fabric and Istio's Gateway deployments listen on the listener port.
            _ => vec![DEFAULT_PROBE_PORT],
        }
    }

    /// The conventional selector of the controller's serving pods, for API-driven profiles.
    pub fn default_selector(self) -> Option<&'static str> {
        match self {
            BuiltinProfile::IngressNginx => {
                Some("app.kubernetes.io/name=ingress-nginx,app.kubernetes.io/component=controller")
            }
            BuiltinProfile::HaproxyIngress => Some("app.kubernetes.io/name=haproxy-ingress"),
            BuiltinProfile::TraefikCrd => Some("app.kubernetes.io/name=traefik"),
            BuiltinProfile::Contour => {
                Some("app.kubernetes.io/name=contour,app.kubernetes.io/component=envoy")
            }
            BuiltinProfile::Istio => Some("istio=ingressgateway"),
            BuiltinProfile::EnvoyGateway => Some(
                "app.kubernetes.io/component=proxy,app.kubernetes.io/managed-by=envoy-gateway,app.kubernetes.io/name=envoy",
            ),
            BuiltinProfile::IstioGateway => {
                Some("gateway.istio.io/managed=istio.io-gateway-controller")
            }
            BuiltinProfile::ContourGateway => {
                Some("app.kubernetes.io/managed-by=contour-gateway-provisioner")
            }
            // Its data-plane pods carry the Helm release's names: the user writes the selector.
            _ => None,
        }
    }

    /// Which Ingress and Gateway objects the controller serves (read from each project's
    /// source; docs/configuration.md cites them).
    pub fn routes(self) -> Option<RouteMatch> {
        let strings = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let routes = |ingress: &[&str], annotations: &[&str], gateway: &[&str]| RouteMatch {
            ingress_controllers: strings(ingress),
            ingress_class_names: Vec::new(),
            ingress_class_annotations: strings(annotations),
            gateway_controllers: strings(gateway),
            default_certificate: None,
        };
        Some(match self {
            BuiltinProfile::IngressNginx => routes(&["k8s.io/ingress-nginx"], &["nginx"], &[]),
            BuiltinProfile::HaproxyIngress => routes(
                &["haproxy-ingress.github.io/controller"],
                &["haproxy"],
                &["haproxy-ingress.github.io/controller"],
            ),
            BuiltinProfile::TraefikCrd => routes(
                &["traefik.io/ingress-controller"],
                &["traefik"],
                &["traefik.io/gateway-controller"],
            ),
            // Contour takes its IngressClass by name, whatever the class's controller.
            BuiltinProfile::Contour => RouteMatch {
                ingress_class_names: strings(&["contour"]),
                ..routes(&[], &["contour"], &[])
            },
            BuiltinProfile::Istio => routes(&["istio.io/ingress-controller"], &["istio"], &[]),
            BuiltinProfile::EnvoyGateway => {
                routes(&[], &[], &["gateway.envoyproxy.io/gatewayclass-controller"])
            }
            BuiltinProfile::NginxGatewayFabric => {
                routes(&[], &[], &["gateway.nginx.org/nginx-gateway-controller"])
            }
            BuiltinProfile::IstioGateway => routes(&[], &[], &["istio.io/gateway-controller"]),
            BuiltinProfile::ContourGateway => {
                routes(&[], &[], &["projectcontour.io/gateway-controller"])
            }
            BuiltinProfile::Nginx
            | BuiltinProfile::Haproxy
            | BuiltinProfile::Traefik
            | BuiltinProfile::Caddy
            | BuiltinProfile::Envoy => return None,
        })
    }

    /// The namespaces the controller's usual install puts its pods in. A controller entry with
    /// this profile and no `namespaces` key watches only these, so a tenant's pod labelled like
    /// the controller elsewhere is never enrolled (its Secrets read, its processes signalled).
    /// Empty: the profile has no usual namespace (file-reading controllers are the user's own),
    /// and an entry without `namespaces` matches every namespace.
    pub fn usual_namespaces(self) -> &'static [&'static str] {
        match self {
            BuiltinProfile::IngressNginx => &["ingress-nginx"],
            // The project's getting-started guide installs into `ingress-controller`.
            BuiltinProfile::HaproxyIngress => &["haproxy-ingress", "ingress-controller"],
            // Traefik's chart docs use `traefik`; k3s ships Traefik in `kube-system`.
            BuiltinProfile::TraefikCrd => &["traefik", "kube-system"],
            BuiltinProfile::Contour => &["projectcontour"],
            // istioctl's default profile and the gateway chart's documented namespace.
            BuiltinProfile::Istio => &["istio-system", "istio-ingress"],
            // Envoy Gateway's proxies run in its own namespace (unless GatewayNamespace mode).
            BuiltinProfile::EnvoyGateway => &["envoy-gateway-system"],
            // These run their data plane in each Gateway's namespace.
            BuiltinProfile::NginxGatewayFabric
            | BuiltinProfile::IstioGateway
            | BuiltinProfile::ContourGateway => &[],
            BuiltinProfile::Nginx
            | BuiltinProfile::Haproxy
            | BuiltinProfile::Traefik
            | BuiltinProfile::Caddy
            | BuiltinProfile::Envoy => &[],
        }
    }

    /// `namespaces` of an entry with this profile that does not name any.
    pub fn default_namespaces(self) -> Option<Vec<String>> {
        let usual = self.usual_namespaces();
        (!usual.is_empty()).then(|| usual.iter().map(|n| n.to_string()).collect())
    }

    /// One-line description (docs, `--help`).
    pub fn description(self) -> &'static str {
        match self {
            BuiltinProfile::Nginx => "plain nginx reading mounted files; SIGHUP to the master",
            BuiltinProfile::Haproxy => {
                "HAProxy in master-worker mode (-W/-Ws) reading mounted files; SIGUSR2 to the master"
            }
            BuiltinProfile::Traefik => {
                "Traefik v3 with the file provider; SIGHUP, only to a process proven to be that (Go build information, flags, environment, static configuration), else verify only"
            }
            BuiltinProfile::Caddy => {
                "Caddy reading mounted files; forced reload through the admin API"
            }
            BuiltinProfile::Envoy => {
                "Envoy with file-based SDS (watched_directory); reloads itself, verify only"
            }
            BuiltinProfile::IngressNginx => {
                "ingress-nginx; reads Secrets from the API, verify only"
            }
            BuiltinProfile::HaproxyIngress => {
                "HAProxy Ingress; reads Secrets from the API, verify only"
            }
            BuiltinProfile::TraefikCrd => {
                "Traefik with the Kubernetes CRD/Ingress provider; reads Secrets from the API, verify only"
            }
            BuiltinProfile::Contour => {
                "Contour's Envoy pods; Contour reads Secrets from the API, verify only"
            }
            BuiltinProfile::Istio => {
                "Istio ingress gateway; istiod/SDS reads Secrets from the API, verify only"
            }
            BuiltinProfile::EnvoyGateway => {
                "Envoy Gateway's proxies (Gateway API); reads Secrets from the API, verify only"
            }
            BuiltinProfile::NginxGatewayFabric => {
                "NGINX Gateway Fabric's data plane (Gateway API); reads Secrets from the API, verify only; give the selector"
            }
            BuiltinProfile::IstioGateway => {
                "Istio's Gateway API deployments; istiod reads Secrets from the API, verify only"
            }
            BuiltinProfile::ContourGateway => {
                "Contour's provisioned Envoy (Gateway API); reads Secrets from the API, verify only"
            }
        }
    }

    /// A controller entry named `name` with this profile's defaults and `selector`.
    pub fn controller(self, name: &str, selector: LabelSelector) -> ControllerProfile {
        ControllerProfile {
            restart_fallback: false,
            name: name.to_string(),
            selector,
            namespaces: self.default_namespaces(),
            containers: None,
            reload: self.reload(),
            mode: self.mode(),
            probe: ProbeConfig {
                ports: self.ports(),
                hosts: Vec::new(),
            },
            routes: self.routes(),
        }
    }

    /// The controller entry named after this profile with its default selector, if it has one.
    pub fn default_controller(self) -> Option<ControllerProfile> {
        let selector = LabelSelector::parse(self.default_selector()?).ok()?;
        Some(self.controller(self.name(), selector))
    }

    /// The controllers of `Config::default()`: every profile with a default selector and a
    /// usual namespace (API-driven ones), each verify-only. File-reading profiles have no
    /// conventional labels, so they are never guessed; Gateway API data planes that run in
    /// each Gateway's namespace (istio-gateway, contour-gateway) are enrolled only when
    /// configured, so a look-alike pod in another namespace never is by default.
    pub fn default_controllers() -> Vec<ControllerProfile> {
        BuiltinProfile::ALL
            .into_iter()
            .filter(|p| !p.usual_namespaces().is_empty())
            .filter_map(BuiltinProfile::default_controller)
            .collect()
    }
}

impl fmt::Display for BuiltinProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
