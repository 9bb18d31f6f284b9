//! `os`: node_os_info and node_os_version from os-release (`/etc/os-release`, else
//! `/usr/lib/os-release`, under `--path.rootfs`). The file is read once, on the first scrape
//! that finds it; the labels are kept for every later scrape.

use std::path::Path;

use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, Kind, MetricWriter, Registration,
    no_flags,
};

pub static REGISTRATION: Registration = Registration {
    name: "os",
    default_enabled: true,
    flags: no_flags,
    build,
};

fn build(_: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    Ok(Box::new(OsCollector { release: None }))
}

struct OsCollector {
    release: Option<OsRelease>,
}

/// The os-release keys node_os_info carries, in its label order.
const INFO_KEYS: [(&str, &str); 12] = [
    ("build_id", "BUILD_ID"),
    ("id", "ID"),
    ("id_like", "ID_LIKE"),
    ("image_id", "IMAGE_ID"),
    ("image_version", "IMAGE_VERSION"),
    ("name", "NAME"),
    ("pretty_name", "PRETTY_NAME"),
    ("variant", "VARIANT"),
    ("variant_id", "VARIANT_ID"),
    ("version", "VERSION"),
    ("version_codename", "VERSION_CODENAME"),
    ("version_id", "VERSION_ID"),
];
const ID: usize = 1;
const ID_LIKE: usize = 2;
const NAME: usize = 5;
const VERSION_ID: usize = 11;

#[derive(Debug, Default, PartialEq)]
pub struct OsRelease {
    /// Values of [`INFO_KEYS`], empty when absent.
    pub values: [String; 12],
    /// The major.minor part of VERSION_ID, 0 when it has none.
    pub version: f64,
}

/// Unquotes an os-release value: double quotes allow `\"`, `\\`, `\$` and `` \` `` escapes,
/// single quotes are literal, an unquoted value ends at whitespace.
fn unquote(raw: &str) -> Option<String> {
    let raw = raw.trim();
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    match raw.chars().next() {
        Some('"') => {
            chars.next();
            let mut escaped = false;
            for c in chars.by_ref() {
                match (escaped, c) {
                    (true, c) => {
                        if !matches!(c, '"' | '\\' | '$' | '`') {
                            out.push('\\');
                        }
                        out.push(c);
                        escaped = false;
                    }
                    (false, '\\') => escaped = true,
                    (false, '"') => {
                        let rest = chars.as_str().trim();
                        return (rest.is_empty() || rest.starts_with('#')).then_some(out);
                    }
                    (false, c) => out.push(c),
                }
            }
            None
        }
        Some('\'') => {
            let inner = raw.strip_prefix('\'')?;
            let (value, rest) = inner.split_once('\'')?;
            let rest = rest.trim();
            (rest.is_empty() || rest.starts_with('#')).then(|| value.to_string())
        }
        _ => {
            let mut parts = raw.splitn(2, char::is_whitespace);
            let value = parts.next().unwrap_or("");
            let rest = parts.next().unwrap_or("").trim();
            (rest.is_empty() || rest.starts_with('#')).then(|| value.replace('\\', ""))
        }
    }
}

/// The leading `major[.minor]` of a VERSION_ID ("22.04.1" -> 22.04), 0 when it has none.
pub fn major_minor(version_id: &str) -> f64 {
    let digits = |s: &str| s.bytes().take_while(u8::is_ascii_digit).count();
    let major = digits(version_id);
    if major == 0 {
        return 0.0;
    }
    let mut end = major;
    if version_id.as_bytes().get(major) == Some(&b'.') {
        end = major + 1 + digits(&version_id[major + 1..]);
    }
    version_id[..end]
        .trim_end_matches('.')
        .parse()
        .unwrap_or(0.0)
}

/// Parses os-release text; lines that are not `KEY=value` go to `malformed`.
pub fn parse_os_release(text: &str, mut malformed: impl FnMut(&str)) -> OsRelease {
    let mut release = OsRelease::default();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let trimmed = trimmed.strip_prefix("export ").unwrap_or(trimmed);
        let Some((key, raw)) = trimmed.split_once('=') else {
            malformed(line);
            continue;
        };
        let Some(value) = unquote(raw) else {
            malformed(line);
            continue;
        };
        if let Some(i) = INFO_KEYS.iter().position(|(_, k)| *k == key.trim())
            && let Some(slot) = release.values.get_mut(i)
        {
            *slot = value;
        }
    }
    release.version = major_minor(&release.values[VERSION_ID]);
    release
}

fn read_os_release(ctx: &Context<'_>) -> Result<OsRelease, CollectorError> {
    for file in ["/etc/os-release", "/usr/lib/os-release"] {
        let path = ctx.paths.root(file);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                return Ok(parse_os_release(&text, |line| {
                    ctx.malformed(Path::new(&path), line)
                }));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(CollectorError::io(path, e)),
        }
    }
    Err(CollectorError::NoData)
}

impl Collector for OsCollector {
    fn update(
        &mut self,
        ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        if self.release.is_none() {
            self.release = Some(read_os_release(ctx)?);
        }
        let Some(release) = &self.release else {
            return Err(CollectorError::NoData);
        };
        let labels: [(&str, &str); 12] =
            std::array::from_fn(|i| (INFO_KEYS[i].0, release.values[i].as_str()));
        out.single(
            "node_os_info",
            "A metric with a constant '1' value labeled by build_id, id, id_like, image_id, image_version, name, pretty_name, variant, variant_id, version, version_codename, version_id.",
            Kind::Gauge,
            &labels,
            1.0,
        )?;
        if release.version > 0.0 {
            out.single(
                "node_os_version",
                "Metric containing the major.minor part of the OS version.",
                Kind::Gauge,
                &[
                    ("id", &release.values[ID]),
                    ("id_like", &release.values[ID_LIKE]),
                    ("name", &release.values[NAME]),
                ],
                release.version,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::Paths;
    use crate::collector::testing::assert_renders_golden;

    #[test]
    fn golden() {
        assert_renders_golden("basic", "os", |_| Box::new(OsCollector { release: None }));
    }

    #[test]
    fn falls_back_to_usr_lib_and_skips_bad_lines() {
        assert_renders_golden("odd", "os", |_| Box::new(OsCollector { release: None }));
    }

    #[test]
    fn read_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        let file = dir.path().join("etc/os-release");
        std::fs::write(&file, "ID=first\nVERSION_ID=1\n").unwrap();
        let paths = Paths::fixture(dir.path());
        let scraper = crate::scrape::Scraper::new(
            paths,
            vec![("os", Box::new(OsCollector { release: None }))],
        );
        let body = |s: &crate::scrape::Scraper| {
            String::from_utf8(s.scrape(false).unwrap().body.to_vec()).unwrap()
        };
        assert!(body(&scraper).contains("id=\"first\""));
        std::fs::write(&file, "ID=second\n").unwrap();
        assert!(body(&scraper).contains("id=\"first\""));
    }

    #[test]
    fn values_and_versions() {
        let r = parse_os_release(
            "NAME=\"Ubuntu\"\nVERSION_ID=\"22.04.1\"\nID=ubuntu # trailing\nID_LIKE='debian x'\nPRETTY_NAME=\"say \\\"hi\\\"\"\n",
            |l| panic!("{l}"),
        );
        assert_eq!(r.values[NAME], "Ubuntu");
        assert_eq!(r.values[ID], "ubuntu");
        assert_eq!(r.values[ID_LIKE], "debian x");
        assert_eq!(r.values[6], "say \"hi\"");
        assert_eq!(r.version, 22.04);
        assert_eq!(major_minor("12"), 12.0);
        assert_eq!(major_minor("rolling"), 0.0);
        assert_eq!(major_minor("7."), 7.0);
    }
}
