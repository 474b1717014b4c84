//! The desired-state compiler: from a site and the deployments that select it, the site's
//! manifest, with every template rendered for that site.
//!
//! Pure: the same inputs give the same manifest, byte for byte, and so the same hash. Rendering
//! is where per-site mistakes surface (a label one site lacks), so errors name the deployment,
//! the site, the variable and, when the template came from a file, its file and line.
//!
//! Rendering is bounded (`atoll_spec::render`): each env value, each file and all the templates
//! of one site's manifest together have a size limit (`Limits`, settable on the control plane),
//! and so has everything a template builds while rendering. A rendered env value holding a NUL
//! byte is refused here, as a literal one is when parsing: the edge can never pass it to a
//! container. A file may hold one.

use std::collections::BTreeMap;

use atoll_api::manifest::ClusterSettings;
use atoll_api::{ManifestApplication, ManifestContent, ManifestService, RenderedFile, SiteHost};
use atoll_spec::application::Service;
use atoll_spec::render::{Exceeded, Limits, Program};
use atoll_spec::{Application, Deployment, Diagnostic, Origin, Site, Template};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::secrets::{self, SecretMeta};
use atoll_api::host::Host;

/// One application placed on a site by one deployment.
#[derive(Debug, Clone, Copy)]
pub struct Placement<'a> {
    pub deployment: &'a Deployment,
    pub application: &'a Application,
}

/// The templates of one compile, each parsed once however many sites render it: a fleet-wide
/// apply renders the same few templates for every site, and parsing them (and making the
/// environment) for each site was most of an apply's time at ten thousand sites.
pub struct Templates<'a> {
    env: minijinja::Environment<'a>,
    /// Each template's instructions with the size checks in, by its text.
    programs: BTreeMap<&'a str, Program<'a>>,
    limits: Limits,
}

impl std::fmt::Debug for Templates<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates").finish_non_exhaustive()
    }
}

impl Default for Templates<'_> {
    fn default() -> Self {
        Templates::new(Limits::default())
    }
}

impl Templates<'_> {
    pub fn new(limits: Limits) -> Self {
        Templates {
            env: atoll_spec::template::environment(),
            programs: BTreeMap::new(),
            limits,
        }
    }
}

/// Compiles one site's manifest content. `placements` may come in any order; `secrets` is
/// every secret's bookkeeping (no value: the values are sealed when the site asks); `hosts` are
/// the facts of the site's enrolled hosts.
pub fn compile_site(
    site: &Site,
    placements: &[Placement<'_>],
    secrets: &BTreeMap<String, SecretMeta>,
    hosts: &[Host],
) -> Result<ManifestContent, Vec<RenderError>> {
    compile_site_with(&mut Templates::default(), site, placements, secrets, hosts)
}

/// [`compile_site`] with templates shared across the sites of one compile.
pub fn compile_site_with<'a>(
    templates: &mut Templates<'a>,
    site: &Site,
    placements: &[Placement<'a>],
    secrets: &BTreeMap<String, SecretMeta>,
    hosts: &[Host],
) -> Result<ManifestContent, Vec<RenderError>> {
    let mut errors = Vec::new();
    let mut applications = Vec::with_capacity(placements.len());
    let limits = templates.limits;
    // What the templates of this site's manifest rendered, together.
    let mut rendered = 0usize;
    for p in placements {
        let app = p.application;
        let mut services = Vec::with_capacity(app.services.len());
        for (i, service) in app.services.iter().enumerate() {
            let ctx = context(site, hosts, p.deployment, app, service);
            let mut render = |template: &'a Template, field: &str, kind: Field| -> String {
                let limit = match kind {
                    Field::Env => limits.value,
                    Field::File => limits.file,
                    Field::Manifest => limits.manifest,
                };
                let result = render_one(templates, template, &ctx, limit, kind).and_then(|text| {
                    rendered = rendered.saturating_add(text.len());
                    if rendered > limits.manifest {
                        return Err(Problem::TooLarge {
                            field: Field::Manifest,
                            exceeded: Exceeded::Value {
                                size: rendered,
                                limit: limits.manifest,
                            },
                        });
                    }
                    if kind == Field::Env && text.contains('\0') {
                        return Err(Problem::Nul);
                    }
                    Ok(text)
                });
                match result {
                    Ok(text) => text,
                    Err(problem) => {
                        errors.push(RenderError {
                            site: site.name.clone(),
                            deployment: p.deployment.name.clone(),
                            application: format!("{}@{}", app.name, app.version),
                            field: format!("services[{i}].{field}"),
                            origin: template.origin.clone(),
                            problem,
                        });
                        String::new()
                    }
                }
            };
            let env_values: BTreeMap<String, String> = service
                .env
                .iter()
                .map(|(k, t)| (k.clone(), render(t, &format!("env.{k}"), Field::Env)))
                .collect();
            let files = service
                .files
                .iter()
                .enumerate()
                .map(|(f, file)| {
                    RenderedFile::from_spec(
                        file,
                        render(&file.template, &format!("files[{f}].template"), Field::File),
                    )
                })
                .collect();
            let mut service_secrets = Vec::with_capacity(service.secrets.len());
            for (s, reference) in service.secrets.iter().enumerate() {
                match secrets::resolve(secrets, reference, &site.name) {
                    Ok(resolved) => service_secrets.push(resolved),
                    Err(message) => errors.push(RenderError {
                        site: site.name.clone(),
                        deployment: p.deployment.name.clone(),
                        application: format!("{}@{}", app.name, app.version),
                        field: format!("services[{i}].secrets[{s}]"),
                        origin: None,
                        problem: Problem::Secret(message),
                    }),
                }
            }
            services.push(ManifestService {
                name: service.name.clone(),
                image: service.image.clone(),
                command: service.command.clone(),
                args: service.args.clone(),
                env: env_values,
                replicas: service.replicas,
                mode: service.mode,
                ports: service.ports.iter().map(Into::into).collect(),
                resources: (&service.resources).into(),
                requires: (&service.requires).into(),
                health: service.health.as_ref().map(Into::into),
                files,
                secrets: service_secrets,
                on_secret_change: service.on_secret_change.clone(),
                volumes: service.volumes.iter().map(Into::into).collect(),
            });
        }
        applications.push(ManifestApplication {
            deployment: p.deployment.name.clone(),
            application: app.name.clone(),
            version: app.version.clone(),
            services,
            hosts: p
                .deployment
                .placement
                .hosts
                .as_ref()
                .map(|h| h.source().to_owned()),
        });
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    applications.sort_by(|a, b| a.deployment.cmp(&b.deployment));
    Ok(ManifestContent {
        applications,
        site_hosts: site_hosts(hosts),
        cluster: site.cluster.map(|c| ClusterSettings {
            failure_timeout_ms: c
                .failure_timeout
                .map(|t| u64::try_from(t.0.as_millis()).unwrap_or(u64::MAX)),
        }),
        ..ManifestContent::default()
    })
}

/// The members of a site cluster as its manifest lists them: every host given (the attached
/// ones), sorted by id, with the site address each reported; none for a site of one host,
/// which has no peer to meet, so its manifest stays what it always was.
pub fn site_hosts(hosts: &[Host]) -> Vec<SiteHost> {
    if hosts.len() < 2 {
        return Vec::new();
    }
    let mut members: Vec<SiteHost> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| SiteHost {
            host: h.name.clone(),
            address: h.inventory.site_address.clone(),
            founder: i == 0,
        })
        .collect();
    members.sort();
    members.dedup_by(|a, b| a.host == b.host);
    members
}

/// `sha256:` and the hex digest of the content's canonical JSON.
pub fn content_hash(content: &ManifestContent) -> String {
    // Serializing plain structs, vectors and BTreeMaps cannot fail.
    let bytes = serde_json::to_vec(content).unwrap_or_default();
    format!("sha256:{}", hex::encode(Sha256::digest(&bytes)))
}

/// What templates read. `site.variables` is the deployment's view of them: see
/// [`Deployment::variables_for`].
fn context(
    site: &Site,
    hosts: &[Host],
    deployment: &Deployment,
    app: &Application,
    service: &Service,
) -> Value {
    let variables = deployment.variables_for(&site.name, &site.labels, &site.variables);
    let hosts: Vec<Value> = hosts.iter().map(host_view).collect();
    json!({
        "site": { "name": site.name, "labels": site.labels, "variables": variables, "hosts": hosts },
        "app": { "name": app.name, "version": app.version },
        "deployment": { "name": deployment.name },
        "service": { "name": service.name },
    })
}

/// What templates read of one host as an element of `site.hosts`: its name, labels, the facts
/// of its inventory (`runtime` as `name version`) and its devices with their attributes.
fn host_view(host: &Host) -> Value {
    let inv = &host.inventory;
    json!({
        "name": host.name,
        "labels": host.labels,
        "hostname": inv.hostname,
        "arch": inv.arch,
        "os": inv.os,
        "kernel": inv.kernel,
        "cpus": inv.cpus,
        "cpu_model": inv.cpu_model,
        "memory_bytes": inv.memory_bytes,
        "disk_bytes": inv.disk_bytes,
        "runtime": format!("{} {}", inv.runtime.name, inv.runtime.version),
        "agent_version": inv.agent_version,
        "devices": inv.devices,
    })
}

/// One template that could not be rendered for one site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderError {
    pub site: String,
    pub deployment: String,
    /// `name@version`.
    pub application: String,
    /// Where in the application, such as `services[0].env.STORE_ID`.
    pub field: String,
    pub origin: Option<Origin>,
    pub problem: Problem,
}

/// What went wrong rendering one template.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Problem {
    /// The template reads a value the site does not have, such as `site.labels.store_id`.
    Missing(String),
    /// A secret the service reads has no value for the site.
    Secret(String),
    Other {
        message: String,
        line: Option<usize>,
    },
    /// The template would render (or build while rendering) more than a limit allows.
    TooLarge { field: Field, exceeded: Exceeded },
    /// A rendered env value holds a NUL byte.
    Nul,
}

/// Which size limit a template is held to; [`Field::Manifest`] is all of a site's together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Field {
    Env,
    File,
    Manifest,
}

impl Field {
    /// What the limit is of, and the control plane's setting for it.
    fn limit_of(self) -> (&'static str, &'static str) {
        match self {
            Field::Env => ("a rendered env value", "--template-value-limit"),
            Field::File => ("a rendered file", "--template-file-limit"),
            Field::Manifest => (
                "the rendered templates of one site's manifest",
                "--template-manifest-limit",
            ),
        }
    }
}

fn render_one<'a>(
    templates: &mut Templates<'a>,
    template: &'a Template,
    ctx: &Value,
    limit: usize,
    field: Field,
) -> Result<String, Problem> {
    if template.is_literal() {
        return Ok(template.source.clone());
    }
    let source = template.source.as_str();
    let other = |e: minijinja::Error| Problem::Other {
        message: e.detail().map_or_else(|| e.to_string(), str::to_owned),
        line: e.line(),
    };
    // A template is known by its text: the same text is the same template.
    if !templates.programs.contains_key(source) {
        templates
            .env
            .add_template(source, source)
            .map_err(|e| Problem::Other {
                message: e.detail().unwrap_or("syntax error").to_owned(),
                line: e.line(),
            })?;
        let program = atoll_spec::render::compile(source)
            .map_err(|(message, line)| Problem::Other { message, line })?;
        templates.programs.insert(source, program);
    }
    let Some(program) = templates.programs.get(source) else {
        return Err(Problem::Other {
            message: "template not compiled".to_owned(),
            line: None,
        });
    };
    let root: BTreeMap<String, minijinja::Value> = ctx
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            (
                k.clone(),
                minijinja::Value::from(minijinja::value::Serde(v)),
            )
        })
        .collect();
    atoll_spec::render::render(&templates.env, program, root, limit).map_err(|(e, exceeded)| {
        if let Some(exceeded) = exceeded {
            return Problem::TooLarge { field, exceeded };
        }
        if e.kind() == minijinja::ErrorKind::UndefinedError
            && let Ok(compiled) = templates.env.get_template(source)
        {
            let mut paths: Vec<String> = compiled.undeclared_variables(true).into_iter().collect();
            paths.sort();
            if let Some(missing) = paths.into_iter().find(|p| !resolves(ctx, p)) {
                return Problem::Missing(missing);
            }
        }
        other(e)
    })
}

/// True when a dotted path such as `site.labels.store_id` names a value in `ctx`.
fn resolves(ctx: &Value, path: &str) -> bool {
    path.split('.')
        .try_fold(ctx, |v, part| v.get(part))
        .is_some()
}

/// Turns render errors into diagnostics, one per template and problem, naming every site that
/// has it: a label missing at 50 sites is one thing to fix, not 50.
pub fn diagnostics(mut errors: Vec<RenderError>) -> Vec<Diagnostic> {
    errors.sort_by(|a, b| {
        let key = |e: &RenderError| {
            (
                e.origin
                    .as_ref()
                    .map(|o| (o.file.clone(), o.line, o.column)),
                e.deployment.clone(),
                e.field.clone(),
                e.problem.clone(),
            )
        };
        key(a).cmp(&key(b)).then_with(|| a.site.cmp(&b.site))
    });
    let mut out: Vec<Diagnostic> = Vec::new();
    let mut group: Vec<RenderError> = Vec::new();
    for e in errors {
        let same = group.first().is_some_and(|g| {
            g.deployment == e.deployment
                && g.application == e.application
                && g.field == e.field
                && g.problem == e.problem
                && g.origin == e.origin
        });
        if !same && !group.is_empty() {
            out.push(group_diagnostic(std::mem::take(&mut group)));
        }
        group.push(e);
    }
    if !group.is_empty() {
        out.push(group_diagnostic(group));
    }
    out
}

fn group_diagnostic(group: Vec<RenderError>) -> Diagnostic {
    let first = &group[0];
    let sites: Vec<&str> = group.iter().map(|e| e.site.as_str()).collect();
    let named = match sites.len() {
        1 => format!("site {}", sites[0]),
        n if n <= 5 => format!("sites {}", sites.join(", ")),
        n => format!("{n} sites: {} and {} more", sites[..5].join(", "), n - 5),
    };
    let (file, mut line, column) = match &first.origin {
        Some(o) => (o.file.to_string(), o.line, o.column),
        None => (format!("Application {}", first.application), 0, 0),
    };
    let path = format!(
        "Deployment {} → Application {}: {}",
        first.deployment, first.application, first.field
    );
    let (message, hint) = match &first.problem {
        Problem::Missing(var) => {
            let hint = match var.split_once('.').map(|(_, rest)| rest.split_once('.')) {
                Some(Some(("labels", key))) => format!("add label `{key}` to {named}, or narrow the deployment's placement"),
                Some(Some(("variables", key))) => {
                    format!("add `{key}` to the variables of {named}, or give a default: {{{{ {var} | default(\"...\") }}}}")
                }
                Some(Some(("hosts", _))) | Some(None) if var.contains("hosts") => format!("{named} may have no enrolled host yet: guard with {{% if site.hosts %}} or use a default"),
                _ => "templates can read site.name, site.labels, site.variables, site.hosts, app, deployment and service".to_owned(),
            };
            (
                format!("template variable `{var}` is not defined for {named}"),
                Some(hint),
            )
        }
        Problem::Other { message, line: l } => {
            if let Some(l) = l.filter(|l| *l > 1 && line > 0) {
                line += l - 1;
            }
            (format!("template error for {named}: {message}"), None)
        }
        Problem::Secret(message) => (format!("for {named}: {message}"), None),
        Problem::TooLarge { field, exceeded } => {
            let (what, setting) = field.limit_of();
            (
                format!(
                    "template too large for {named}: {} (the limit of {what})",
                    atoll_spec::render::describe(*exceeded)
                ),
                Some(format!(
                    "make the template render less, or raise {setting} on the control plane"
                )),
            )
        }
        Problem::Nul => (
            format!("the rendered env value holds a NUL byte for {named}"),
            Some("a process's environment cannot hold NUL: remove it from the template or the site's values".to_owned()),
        ),
    };
    Diagnostic {
        file,
        line,
        column,
        path,
        message,
        hint,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use atoll_spec::{Resource, Source, parse_sources};

    #[test]
    fn a_sites_cluster_settings_reach_its_manifest_and_none_leave_it_as_it_was() {
        let mut s = site("s1", &[]);
        assert_eq!(compile(&s, &[]).unwrap().cluster, None);
        s.cluster = Some(atoll_spec::site::SiteCluster {
            failure_timeout: Some(atoll_spec::units::Span::from_secs(4)),
        });
        assert_eq!(
            compile(&s, &[]).unwrap().cluster,
            Some(ClusterSettings {
                failure_timeout_ms: Some(4000)
            })
        );
    }

    #[test]
    fn the_first_host_to_enroll_founds_the_site_log_whatever_its_name() {
        let host = |name: &str| Host {
            name: name.into(),
            inventory: atoll_api::host::Inventory::default(),
            labels: Default::default(),
        };
        let listed = site_hosts(&[host("h-b"), host("h-a"), host("h-c")]);
        let founders: Vec<(&str, bool)> = listed
            .iter()
            .map(|m| (m.host.as_str(), m.founder))
            .collect();
        assert_eq!(founders, [("h-a", false), ("h-b", true), ("h-c", false)]);
        assert!(site_hosts(&[host("h-a")]).is_empty());
    }

    fn load(yaml: &str) -> Vec<Resource> {
        let parsed = parse_sources(&[Source {
            name: "test.yaml".into(),
            text: yaml.into(),
        }]);
        assert!(parsed.is_ok(), "{:?}", parsed.diagnostics);
        parsed.documents.into_iter().map(|d| d.resource).collect()
    }

    fn compile(
        site: &Site,
        placements: &[Placement<'_>],
    ) -> Result<ManifestContent, Vec<RenderError>> {
        compile_site(site, placements, &BTreeMap::new(), &[])
    }

    const APP: &str = r#"
kind: Application
name: pos
version: "1.0"
services:
  - name: api
    image: pos/api:1.0
    env:
      STORE_ID: "{{ site.labels.store_id }}"
      TZ: "{{ site.variables.timezone | default('UTC') }}"
      PLAIN: plain
    files:
      - path: /etc/pos.toml
        template: |
          store = "{{ site.name }}"
          app = "{{ app.name }}@{{ app.version }}"
---
kind: Deployment
name: pos-prod
application: pos
placement:
  sites: "has(store_id)"
"#;

    fn parts(yaml: &str) -> (Application, Deployment) {
        let mut app = None;
        let mut dep = None;
        for r in load(yaml) {
            match r {
                Resource::Application(a) => app = Some(a),
                Resource::Deployment(d) => dep = Some(d),
                Resource::Site(_) | Resource::DeviceClass(_) => {}
            }
        }
        (app.unwrap(), dep.unwrap())
    }

    fn site(name: &str, labels: &[(&str, &str)]) -> Site {
        Site {
            name: name.into(),
            description: None,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            variables: BTreeMap::new(),
            cluster: None,
        }
    }

    #[test]
    fn templates_shared_across_sites_render_each_site_its_own_values() {
        let (app, dep) = parts(APP);
        let placements = [Placement {
            deployment: &dep,
            application: &app,
        }];
        let mut templates = Templates::default();
        for (name, id) in [
            ("store-1", "0001"),
            ("store-2", "0002"),
            ("store-3", "0003"),
        ] {
            let s = site(name, &[("store_id", id)]);
            let shared =
                compile_site_with(&mut templates, &s, &placements, &BTreeMap::new(), &[]).unwrap();
            assert_eq!(shared, compile(&s, &placements).unwrap());
            assert_eq!(shared.applications[0].services[0].env["STORE_ID"], id);
        }
        // A site missing a label fails alone, and the next one still renders.
        let missing = compile_site_with(
            &mut templates,
            &site("store-4", &[]),
            &placements,
            &BTreeMap::new(),
            &[],
        );
        assert!(missing.is_err());
        let s = site("store-5", &[("store_id", "0005")]);
        assert!(compile_site_with(&mut templates, &s, &placements, &BTreeMap::new(), &[]).is_ok());
    }

    #[test]
    fn renders_env_and_files_per_site() {
        let (app, dep) = parts(APP);
        let s = site("store-1", &[("store_id", "0001")]);
        let content = compile(
            &s,
            &[Placement {
                deployment: &dep,
                application: &app,
            }],
        )
        .unwrap();
        let svc = &content.applications[0].services[0];
        assert_eq!(svc.env["STORE_ID"], "0001");
        assert_eq!(svc.env["TZ"], "UTC");
        assert_eq!(svc.env["PLAIN"], "plain");
        assert_eq!(
            svc.files[0].content,
            "store = \"store-1\"\napp = \"pos@1.0\"\n"
        );
    }

    #[test]
    fn a_missing_label_names_deployment_site_variable_and_line() {
        let (app, dep) = parts(APP);
        let s = site("store-2", &[]);
        let errors = compile(
            &s,
            &[Placement {
                deployment: &dep,
                application: &app,
            }],
        )
        .unwrap_err();
        let errors = diagnostics(errors);
        assert_eq!(errors.len(), 1, "{errors:?}");
        let e = &errors[0];
        assert_eq!((e.file.as_str(), e.line, e.column), ("test.yaml", 9, 17));
        assert_eq!(
            e.path,
            "Deployment pos-prod → Application pos@1.0: services[0].env.STORE_ID"
        );
        assert_eq!(
            e.message,
            "template variable `site.labels.store_id` is not defined for site store-2"
        );
        assert!(
            e.hint
                .as_deref()
                .unwrap()
                .contains("add label `store_id` to site store-2")
        );
    }

    #[test]
    fn one_problem_at_many_sites_is_one_diagnostic() {
        let (app, dep) = parts(APP);
        let mut errors = Vec::new();
        for i in 0..8 {
            let s = site(&format!("s{i}"), &[]);
            errors.extend(
                compile(
                    &s,
                    &[Placement {
                        deployment: &dep,
                        application: &app,
                    }],
                )
                .unwrap_err(),
            );
        }
        let diags = diagnostics(errors);
        assert_eq!(diags.len(), 1, "{diags:?}");
        assert!(
            diags[0]
                .message
                .ends_with("8 sites: s0, s1, s2, s3, s4 and 3 more"),
            "{}",
            diags[0].message
        );
    }

    #[test]
    fn hash_is_stable_and_content_sensitive() {
        let (app, dep) = parts(APP);
        let a = compile(
            &site("s", &[("store_id", "1")]),
            &[Placement {
                deployment: &dep,
                application: &app,
            }],
        )
        .unwrap();
        let b = compile(
            &site("s", &[("store_id", "1")]),
            &[Placement {
                deployment: &dep,
                application: &app,
            }],
        )
        .unwrap();
        let c = compile(
            &site("s", &[("store_id", "2")]),
            &[Placement {
                deployment: &dep,
                application: &app,
            }],
        )
        .unwrap();
        assert_eq!(content_hash(&a), content_hash(&b));
        assert_ne!(content_hash(&a), content_hash(&c));
        assert!(content_hash(&a).starts_with("sha256:"));
        assert_eq!(
            content_hash(&ManifestContent::default()),
            content_hash(&ManifestContent::default())
        );
    }

    #[test]
    fn applications_are_sorted_by_deployment() {
        let (app, dep) = parts(APP);
        let mut dep2 = dep.clone();
        dep2.name = "a-first".into();
        let s = site("s", &[("store_id", "1")]);
        let content = compile(
            &s,
            &[
                Placement {
                    deployment: &dep,
                    application: &app,
                },
                Placement {
                    deployment: &dep2,
                    application: &app,
                },
            ],
        )
        .unwrap();
        let names: Vec<&str> = content
            .applications
            .iter()
            .map(|a| a.deployment.as_str())
            .collect();
        assert_eq!(names, ["a-first", "pos-prod"]);
    }

    #[test]
    fn runaway_templates_run_out_of_fuel() {
        let (mut app, dep) = parts(APP);
        app.services[0].env.insert(
            "LOOP".into(),
            Template::new("{% for i in range(100000000) %}x{% endfor %}"),
        );
        let errors = compile(
            &site("s", &[("store_id", "1")]),
            &[Placement {
                deployment: &dep,
                application: &app,
            }],
        )
        .unwrap_err();
        assert_eq!(errors.len(), 1);
    }

    fn with_env(template: &str) -> (Application, Deployment) {
        let (mut app, dep) = parts(APP);
        app.services[0]
            .env
            .insert("BIG".into(), Template::new(template));
        (app, dep)
    }

    fn compile_limited(
        app: &Application,
        dep: &Deployment,
        site: &Site,
        limits: Limits,
    ) -> Result<ManifestContent, Vec<RenderError>> {
        compile_site_with(
            &mut Templates::new(limits),
            site,
            &[Placement {
                deployment: dep,
                application: app,
            }],
            &BTreeMap::new(),
            &[],
        )
    }

    #[test]
    fn a_template_that_multiplies_a_string_is_refused() {
        let (app, dep) = with_env("{{ 'x' * 100000000 }}");
        let started = std::time::Instant::now();
        let errors = compile_limited(
            &app,
            &dep,
            &site("store-1", &[("store_id", "1")]),
            Limits::DEFAULT,
        )
        .unwrap_err();
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "services[0].env.BIG");
        let d = &diagnostics(errors)[0];
        assert!(d.message.contains("site store-1"), "{}", d.message);
        assert!(d.message.contains("65536 bytes"), "{}", d.message);
        assert!(d.path.contains("pos@1.0"), "{}", d.path);
        assert!(
            d.hint
                .as_deref()
                .is_some_and(|h| h.contains("--template-value-limit")),
            "{:?}",
            d.hint
        );
    }

    #[test]
    fn a_file_may_render_more_than_a_value_but_not_more_than_its_own_limit() {
        let limits = Limits {
            value: 100,
            file: 1000,
            manifest: 10_000,
        };
        let (mut app, dep) = parts(APP);
        app.services[0].files[0].template = Template::new("{{ 'x' * 900 }}");
        let s = site("s", &[("store_id", "1")]);
        assert!(compile_limited(&app, &dep, &s, limits).is_ok());
        app.services[0].files[0].template = Template::new("{{ 'x' * 1001 }}");
        let errors = compile_limited(&app, &dep, &s, limits).unwrap_err();
        assert_eq!(errors[0].field, "services[0].files[0].template");
        assert!(matches!(
            errors[0].problem,
            Problem::TooLarge {
                field: Field::File,
                ..
            }
        ));
    }

    #[test]
    fn a_manifest_whose_templates_together_pass_its_limit_is_refused() {
        let limits = Limits {
            value: 100,
            file: 1000,
            manifest: 1500,
        };
        let (mut app, dep) = parts(APP);
        app.services[0].files[0].template = Template::new("{{ 'x' * 900 }}");
        let mut second = app.services[0].files[0].clone();
        second.path = "/etc/second.toml".into();
        app.services[0].files.push(second);
        let errors =
            compile_limited(&app, &dep, &site("s", &[("store_id", "1")]), limits).unwrap_err();
        assert!(matches!(
            errors[0].problem,
            Problem::TooLarge {
                field: Field::Manifest,
                ..
            }
        ));
        assert!(
            diagnostics(errors)[0]
                .message
                .contains("one site's manifest")
        );
    }

    #[test]
    fn a_nul_byte_that_arrives_through_rendering_is_refused() {
        let (app, dep) = with_env("{{ '\\x00' }}");
        let s = site("s", &[("store_id", "1")]);
        let errors = compile_limited(&app, &dep, &s, Limits::DEFAULT).unwrap_err();
        assert_eq!(errors[0].problem, Problem::Nul);
        let (mut app, dep) = with_env("{{ site.variables.v }}");
        let mut s = site("s", &[("store_id", "1")]);
        s.variables.insert("v".into(), "a\0b".into());
        let errors = compile_limited(&app, &dep, &s, Limits::DEFAULT).unwrap_err();
        assert_eq!(errors[0].field, "services[0].env.BIG");
        assert_eq!(errors[0].problem, Problem::Nul);
        assert!(diagnostics(errors)[0].message.contains("NUL"));
        // A file may hold one.
        app.services[0].env.remove("BIG");
        app.services[0].files[0].template = Template::new("{{ site.variables.v }}");
        assert!(compile_limited(&app, &dep, &s, Limits::DEFAULT).is_ok());
    }
}
