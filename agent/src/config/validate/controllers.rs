//! Validation of `controllers[]`: names, selectors, profiles, reload actions and probes.

use super::*;

impl Validator<'_> {
    pub(in crate::config) fn controllers(
        &mut self,
        value: &Value,
        path: &KeyPath,
    ) -> Vec<ControllerProfile> {
        let Value::Sequence(items) = value else {
            self.wrong_type(path, "a list of controllers", value);
            return Vec::new();
        };
        let mut names: HashMap<String, usize> = HashMap::new();
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            if let Some(controller) = self.controller(item, &path.index(i), i, &mut names) {
                out.push(controller);
            }
        }
        out
    }

    pub(in crate::config) fn controller(
        &mut self,
        item: &Value,
        path: &KeyPath,
        index: usize,
        names: &mut HashMap<String, usize>,
    ) -> Option<ControllerProfile> {
        let Value::Mapping(map) = item else {
            self.wrong_type(
                path,
                "a controller (a mapping with name, selector, reload, ...)",
                item,
            );
            return None;
        };
        self.check_keys(map, path, CONTROLLER_KEYS);

        let name = self.controller_name(map, path, index, names);

        let profile_path = path.key("profile");
        let mut profile_failed = false;
        let profile = match get(map, "profile") {
            None => None,
            Some(Value::String(s)) => {
                let found = BuiltinProfile::from_name(s);
                if found.is_none() {
                    let at = self.at(&profile_path, At::Value);
                    let names: Vec<&str> = BuiltinProfile::ALL.iter().map(|p| p.name()).collect();
                    self.errors.push(ConfigError::UnknownProfile {
                        at,
                        value: s.clone(),
                        expected: names.join(", "),
                    });
                    profile_failed = true;
                }
                found
            }
            Some(other) => {
                self.wrong_type(&profile_path, "a profile name such as nginx", other);
                profile_failed = true;
                None
            }
        };

        let selector = self.controller_selector(map, path, profile, profile_failed);

        let namespaces = match get(map, "namespaces") {
            None => Some(profile.and_then(BuiltinProfile::default_namespaces)),
            Some(Value::Sequence(items))
                if items.len() == 1 && items[0].as_str() == Some(ALL_NAMESPACES) =>
            {
                Some(None)
            }
            Some(v) => self
                .string_list(v, &path.key("namespaces"), "namespace", |s| {
                    if s == ALL_NAMESPACES {
                        Err(format!(
                            "{} means every namespace and stands alone in the list",
                            quote(ALL_NAMESPACES)
                        ))
                    } else if is_dns_label(s) {
                        Ok(())
                    } else {
                        Err(format!(
                            "namespace {}: expected a DNS label (lower-case letters, digits and '-', at most 63)",
                            quote(s)
                        ))
                    }
                })
                .map(Some),
        };
        let containers = match get(map, "containers") {
            None => Some(None),
            Some(v) => self
                .string_list(v, &path.key("containers"), "container", |s| {
                    if is_dns_label(s) {
                        Ok(())
                    } else {
                        Err(format!(
                            "container {}: expected a container name (lower-case letters, digits and '-', at most 63)",
                            quote(s)
                        ))
                    }
                })
                .map(Some),
        };

        let mode_path = path.key("mode");
        let explicit_mode = match get(map, "mode") {
            None => None,
            Some(Value::String(s)) if s == "files" => Some(ReloadMode::Files),
            Some(Value::String(s)) if s == "api" => Some(ReloadMode::Api),
            Some(other) => {
                self.wrong_type(&mode_path, "files or api", other);
                None
            }
        };
        let mode = explicit_mode
            .or(profile.map(BuiltinProfile::mode))
            .unwrap_or(ReloadMode::Files);

        let reload_path = path.key("reload");
        let reload = match get(map, "reload") {
            None => match profile {
                Some(p) => Some(p.reload()),
                None if profile_failed => None,
                None if mode == ReloadMode::Api => Some(ReloadAction::None),
                None => {
                    self.missing(
                        &reload_path,
                        "no profile given; write reload: none for a controller that reloads itself",
                    );
                    None
                }
            },
            Some(v) => self.reload_action(v, &reload_path, profile.map(BuiltinProfile::reload)),
        };
        if let Some(action) = &reload
            && mode == ReloadMode::Api
            && *action != ReloadAction::None
        {
            let (p, at) = if get(map, "reload").is_some() {
                (&reload_path, At::Key)
            } else {
                (&mode_path, At::Value)
            };
            self.invalid(
                p,
                at,
                format!(
                    "mode api (the controller reads Secrets from the API) cannot be combined with a reload action ({action}); write reload: none or mode: files"
                ),
            );
        }

        let probe = self.probe(get(map, "probe"), &path.key("probe"), profile);
        let routes = self.routes(
            get(map, "routes"),
            &path.key("routes"),
            profile.and_then(BuiltinProfile::routes),
        );
        if let Some(Some(_)) = &routes
            && mode == ReloadMode::Files
        {
            self.invalid(
                &path.key("routes"),
                At::Key,
                "hosts from Ingress and Gateway objects are for controllers that read Secrets from the API (mode: api)".to_string(),
            );
        }

        let restart_fallback = match get(map, "reload") {
            Some(Value::Mapping(m)) => match get(m, "fallback") {
                None => Some(false),
                Some(Value::String(s)) if s == "restart" => Some(true),
                Some(other) => {
                    self.invalid(
                        &reload_path.key("fallback"),
                        At::Value,
                        format!(
                            "the only fallback is restart (a rolling restart of the pod's workload when the signal is withheld), not {}",
                            describe(other)
                        ),
                    );
                    None
                }
            },
            _ => Some(false),
        };

        Some(ControllerProfile {
            name: name?,
            selector: selector?,
            namespaces: namespaces?,
            containers: containers?,
            reload: reload?,
            restart_fallback: restart_fallback?,
            mode,
            probe: probe?,
            routes: routes?,
        })
    }

    /// `routes`: which Ingress and Gateway objects are the controller's. Each key given
    /// replaces the profile's value for it.
    pub(in crate::config) fn routes(
        &mut self,
        value: Option<&Value>,
        path: &KeyPath,
        default: Option<RouteMatch>,
    ) -> Option<Option<RouteMatch>> {
        let Some(value) = value else {
            return Some(default);
        };
        let Value::Mapping(map) = value else {
            self.wrong_type(
                path,
                "a mapping with ingressControllers, gatewayControllers, ...",
                value,
            );
            return None;
        };
        self.check_keys(map, path, ROUTES_KEYS);
        let mut routes = default.unwrap_or_default();
        let mut ok = true;
        let lists: [(&str, &mut Vec<String>, &str); 4] = [
            (
                "ingressControllers",
                &mut routes.ingress_controllers,
                "IngressClass controller",
            ),
            (
                "ingressClassNames",
                &mut routes.ingress_class_names,
                "IngressClass name",
            ),
            (
                "ingressClassAnnotations",
                &mut routes.ingress_class_annotations,
                "ingress class",
            ),
            (
                "gatewayControllers",
                &mut routes.gateway_controllers,
                "GatewayClass controllerName",
            ),
        ];
        for (key, target, what) in lists {
            if let Some(v) = get(map, key) {
                match self.string_list(v, &path.key(key), what, check_class_value) {
                    Some(list) => *target = list,
                    None => ok = false,
                }
            }
        }
        if let Some(v) = get(map, "defaultCertificate") {
            let key_path = path.key("defaultCertificate");
            match self.string(v, &key_path, "namespace/name of a Secret") {
                Some(text) => match text.split_once('/') {
                    Some((namespace, name))
                        if is_dns_label(namespace) && is_dns_subdomain(name) =>
                    {
                        routes.default_certificate = Some(SecretKey {
                            namespace: namespace.to_string(),
                            name: name.to_string(),
                        });
                    }
                    _ => {
                        self.invalid(
                            &key_path,
                            At::Value,
                            format!(
                                "{}: expected namespace/name of a Secret, as ingress-nginx's --default-ssl-certificate takes it",
                                quote(text)
                            ),
                        );
                        ok = false;
                    }
                },
                None => ok = false,
            }
        }
        if !ok {
            return None;
        }
        let nothing = !routes.watches_ingresses() && !routes.watches_gateways();
        Some((!nothing).then_some(routes))
    }

    pub(in crate::config) fn controller_name(
        &mut self,
        map: &Mapping,
        path: &KeyPath,
        index: usize,
        names: &mut HashMap<String, usize>,
    ) -> Option<String> {
        let name_path = path.key("name");
        let Some(value) = get(map, "name") else {
            self.missing(&name_path, "");
            return None;
        };
        let name = self.string(value, &name_path, "a name (free text)")?;
        if name.trim().is_empty() {
            self.invalid(&name_path, At::Value, "name must not be empty".to_string());
            return None;
        }
        if name.chars().count() > 128 || name.chars().any(char::is_control) {
            self.invalid(
                &name_path,
                At::Value,
                format!(
                    "name {}: at most 128 characters, no control characters",
                    quote(name)
                ),
            );
            return None;
        }
        if let Some(first) = names.get(name) {
            let first = KeyPath::default()
                .key("controllers")
                .index(*first)
                .to_string();
            let at = self.at(&name_path, At::Value);
            self.errors.push(ConfigError::DuplicateName {
                at,
                name: name.to_string(),
                first,
            });
            return None;
        }
        names.insert(name.to_string(), index);
        Some(name.to_string())
    }

    pub(in crate::config) fn controller_selector(
        &mut self,
        map: &Mapping,
        path: &KeyPath,
        profile: Option<BuiltinProfile>,
        profile_failed: bool,
    ) -> Option<LabelSelector> {
        let selector_path = path.key("selector");
        match get(map, "selector") {
            None => {
                if let Some(default) = profile.and_then(BuiltinProfile::default_selector) {
                    return LabelSelector::parse(default).ok();
                }
                if !profile_failed {
                    let hint = match profile {
                        Some(p) => format!("profile {} has no default selector", quote(p.name())),
                        None => "no profile with a default selector is given".to_string(),
                    };
                    self.missing(&selector_path, &hint);
                }
                None
            }
            Some(Value::String(s)) if s.trim().is_empty() => {
                let at = self.at(&selector_path, At::Value);
                self.errors.push(ConfigError::EmptySelector { at });
                None
            }
            Some(Value::String(s)) => match LabelSelector::parse(s) {
                Ok(selector) => Some(selector),
                Err(reason) => {
                    let at = self.at(&selector_path, At::Value);
                    self.errors.push(ConfigError::InvalidSelector {
                        at,
                        selector: s.clone(),
                        reason,
                    });
                    None
                }
            },
            Some(other) => {
                self.wrong_type(
                    &selector_path,
                    "a label selector string such as app=edge",
                    other,
                );
                None
            }
        }
    }

    pub(in crate::config) fn reload_action(
        &mut self,
        value: &Value,
        path: &KeyPath,
        inherited: Option<ReloadAction>,
    ) -> Option<ReloadAction> {
        const EXPECTED: &str = "none, restart, {signal: ..., process: ...} or {http: {url: ...}}";
        let map = match value {
            Value::String(s) if s == "none" => return Some(ReloadAction::None),
            Value::String(s) if s == "restart" => return Some(ReloadAction::Restart),
            Value::String(s) => {
                let hint = match ReloadSignal::parse(s) {
                    Some(sig) => format!(
                        "; to send a signal write reload: {{signal: {}}}",
                        sig.name()
                    ),
                    None => String::new(),
                };
                self.invalid(
                    path,
                    At::Value,
                    format!("expected {EXPECTED}, found string {}{hint}", quote(s)),
                );
                return None;
            }
            Value::Mapping(m) => m,
            other => {
                self.wrong_type(path, EXPECTED, other);
                return None;
            }
        };
        self.check_keys(map, path, CONTROLLER_RELOAD_KEYS);
        let signal_value = get(map, "signal");
        let process_value = get(map, "process");
        let http_value = get(map, "http");
        let go_value = get(map, "goProgramHandlesSignal");
        if http_value.is_some() && (signal_value.is_some() || process_value.is_some()) {
            let at = self.at(path, At::Key);
            self.errors.push(ConfigError::ConflictingReload { at });
            return None;
        }
        let go_path = path.key("goProgramHandlesSignal");
        if http_value.is_some() && go_value.is_some() {
            self.invalid(
                &go_path,
                At::Key,
                "goProgramHandlesSignal applies to a signal reload, not to http".to_string(),
            );
            return None;
        }
        let fallback_value = get(map, "fallback");
        if http_value.is_some() && fallback_value.is_some() {
            self.invalid(
                &path.key("fallback"),
                At::Key,
                "fallback applies to a signal reload (when the signal is withheld), not to http"
                    .to_string(),
            );
            return None;
        }
        if let Some(http) = http_value {
            let http_path = path.key("http");
            let Value::Mapping(http_map) = http else {
                self.wrong_type(&http_path, "a mapping with url", http);
                return None;
            };
            self.check_keys(http_map, &http_path, HTTP_KEYS);
            let url_path = http_path.key("url");
            let Some(url_value) = get(http_map, "url") else {
                self.missing(&url_path, "");
                return None;
            };
            let url = self.string(
                url_value,
                &url_path,
                "a URL such as http://127.0.0.1:2019/load",
            )?;
            if let Err(message) = check_url(url) {
                self.invalid(&url_path, At::Value, message);
                return None;
            }
            return Some(ReloadAction::Http {
                url: url.to_string(),
            });
        }
        if signal_value.is_none()
            && process_value.is_none()
            && go_value.is_none()
            && fallback_value.is_none()
        {
            self.invalid(
                path,
                At::Value,
                format!("empty reload: expected {EXPECTED}"),
            );
            return None;
        }
        let (inherited_signal, inherited_process, inherited_go) = match inherited {
            Some(ReloadAction::Signal {
                signal,
                process,
                go,
            }) => (Some(signal), process, go),
            _ => (None, None, GoSignalPolicy::Refuse),
        };
        let go = match go_value {
            None => Some(inherited_go),
            Some(Value::Bool(true)) => Some(GoSignalPolicy::OptIn),
            Some(Value::Bool(false)) => Some(GoSignalPolicy::Refuse),
            Some(other) => {
                self.wrong_type(&go_path, "true or false", other);
                None
            }
        };
        let signal_path = path.key("signal");
        let signal = match signal_value {
            None => match inherited_signal {
                Some(signal) => Some(signal),
                None => {
                    self.missing(
                        &signal_path,
                        "process names the target, signal says what to send",
                    );
                    None
                }
            },
            Some(Value::String(s)) => match ReloadSignal::parse(s) {
                Some(signal) => Some(signal),
                None => {
                    let at = self.at(&signal_path, At::Value);
                    self.errors.push(ConfigError::UnknownSignal {
                        at,
                        value: s.clone(),
                    });
                    None
                }
            },
            Some(other) => {
                self.wrong_type(&signal_path, "SIGHUP, SIGUSR1 or SIGUSR2", other);
                None
            }
        };
        let process_path = path.key("process");
        let process = match process_value {
            None => Some(inherited_process),
            Some(v) => match self.string(v, &process_path, "a process title prefix") {
                Some(s) if s.is_empty() || s.contains('\0') => {
                    self.invalid(
                        &process_path,
                        At::Value,
                        "process must be a non-empty prefix of the process title or comm"
                            .to_string(),
                    );
                    None
                }
                Some(s) => Some(Some(s.to_string())),
                None => None,
            },
        };
        Some(ReloadAction::Signal {
            signal: signal?,
            process: process?,
            go: go?,
        })
    }

    pub(in crate::config) fn probe(
        &mut self,
        value: Option<&Value>,
        path: &KeyPath,
        profile: Option<BuiltinProfile>,
    ) -> Option<ProbeConfig> {
        let default_ports = profile.map_or_else(|| vec![DEFAULT_PROBE_PORT], BuiltinProfile::ports);
        let Some(value) = value else {
            return Some(ProbeConfig {
                ports: default_ports,
                hosts: Vec::new(),
            });
        };
        let Value::Mapping(map) = value else {
            self.wrong_type(path, "a mapping with ports and hosts", value);
            return None;
        };
        self.check_keys(map, path, PROBE_KEYS);
        let ports = match get(map, "ports") {
            None => Some(default_ports),
            Some(v) => self.ports(v, &path.key("ports")),
        };
        let hosts = match get(map, "hosts") {
            None => Some(Vec::new()),
            // An explicit empty list is the documented default, so it is fine here.
            Some(Value::Sequence(items)) if items.is_empty() => Some(Vec::new()),
            Some(v) => self.string_list(v, &path.key("hosts"), "host", check_host),
        };
        Some(ProbeConfig {
            ports: ports?,
            hosts: hosts?,
        })
    }

    pub(in crate::config) fn ports(&mut self, value: &Value, path: &KeyPath) -> Option<Vec<u16>> {
        let Value::Sequence(items) = value else {
            self.wrong_type(path, "a list of ports such as [443]", value);
            return None;
        };
        if items.is_empty() {
            self.invalid(path, At::Value, "at least one port is needed".to_string());
            return None;
        }
        let mut ports = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let item_path = path.index(i);
            let port = match item {
                Value::Number(n) => match n.as_u64().map(u16::try_from) {
                    Some(Ok(port)) if port != 0 => Some(port),
                    _ => {
                        let at = self.at(&item_path, At::Value);
                        self.errors.push(ConfigError::InvalidPort {
                            at,
                            value: n.to_string(),
                        });
                        None
                    }
                },
                other => {
                    self.wrong_type(&item_path, "a port number from 1 to 65535", other);
                    None
                }
            };
            match port {
                Some(port) if ports.contains(&port) => {
                    self.invalid(
                        &item_path,
                        At::Value,
                        format!("port {port} is listed twice"),
                    );
                    ok = false;
                }
                Some(port) => ports.push(port),
                None => ok = false,
            }
        }
        ok.then_some(ports)
    }
}
