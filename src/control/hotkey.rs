//! Hotkeys read passively from keyboards through evdev (the keyboard is never grabbed: other
//! programs keep receiving every key). The key/combination → action mapping is a pure state
//! machine ([`KeyMapper`]) fed with `InputEvent`s, so it is tested with synthetic events.

use std::collections::{HashMap, HashSet};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use evdev::{EventType, InputEvent, KeyCode};

/// What a hotkey asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// A detailed description of the current view.
    Detail,
    /// Say the last narration again.
    Repeat,
    /// Pause scene narration, or resume it.
    TogglePause,
    /// What changed since the last description.
    Changed,
    /// Read the text in view.
    Read,
    /// Stop speaking now (narration goes on).
    Hush,
    /// Say the watches that are set.
    Watches,
    /// When was the view in front of the camera seen before (recall by its embedding)?
    RecallView,
    /// Start a new conversation (the next question is not a follow-up).
    NewConversation,
    /// Switch between narrating changes and periodic narration.
    ToggleMode,
}

/// A bad key name or combination in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ComboError {
    #[error("empty key combination (write e.g. \"KEY_F12\" or \"KEY_LEFTMETA+KEY_D\")")]
    Empty,
    #[error("unknown key name `{name}` in \"{combo}\": use Linux input key names such as KEY_F12, KEY_PAUSE or KEY_D, and CTRL, SHIFT, ALT, META (either side) or KEY_LEFTCTRL … for modifiers, joined with '+'")]
    UnknownKey { name: String, combo: String },
    #[error("`{name}` appears twice in \"{combo}\"")]
    Repeated { name: String, combo: String },
}

const CTRL: [KeyCode; 2] = [KeyCode::KEY_LEFTCTRL, KeyCode::KEY_RIGHTCTRL];
const SHIFT: [KeyCode; 2] = [KeyCode::KEY_LEFTSHIFT, KeyCode::KEY_RIGHTSHIFT];
const ALT: [KeyCode; 2] = [KeyCode::KEY_LEFTALT, KeyCode::KEY_RIGHTALT];
const META: [KeyCode; 2] = [KeyCode::KEY_LEFTMETA, KeyCode::KEY_RIGHTMETA];

fn is_modifier(k: KeyCode) -> bool {
    CTRL.contains(&k) || SHIFT.contains(&k) || ALT.contains(&k) || META.contains(&k)
}

/// A key, optionally with modifiers that must be held: `KEY_F12`, `KEY_LEFTMETA+KEY_D`,
/// `CTRL+ALT+KEY_D` (a generic modifier accepts either side).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Combo {
    /// Each modifier is satisfied by any of its alternatives (left or right).
    pub modifiers: Vec<Vec<KeyCode>>,
    pub key: KeyCode,
    pub text: String,
}

fn parse_key(name: &str) -> Option<Vec<KeyCode>> {
    let up = name.trim().to_ascii_uppercase();
    match up.as_str() {
        "CTRL" | "CONTROL" => return Some(CTRL.to_vec()),
        "SHIFT" => return Some(SHIFT.to_vec()),
        "ALT" => return Some(ALT.to_vec()),
        "META" | "SUPER" | "WIN" => return Some(META.to_vec()),
        _ => {}
    }
    KeyCode::from_str(&up)
        .or_else(|_| KeyCode::from_str(&format!("KEY_{up}")))
        .ok()
        .map(|k| vec![k])
}

impl Combo {
    pub fn parse(s: &str) -> Result<Combo, ComboError> {
        let parts: Vec<&str> = s.split('+').map(str::trim).collect();
        if s.trim().is_empty() || parts.iter().any(|p| p.is_empty()) {
            return Err(ComboError::Empty);
        }
        let mut keys = vec![];
        for p in &parts {
            let k = parse_key(p).ok_or_else(|| ComboError::UnknownKey {
                name: p.to_string(),
                combo: s.to_string(),
            })?;
            if keys.contains(&k) {
                return Err(ComboError::Repeated {
                    name: p.to_string(),
                    combo: s.to_string(),
                });
            }
            keys.push(k);
        }
        // a generic modifier in last place ("CTRL") stands for its left key
        let last = keys.pop().expect("at least one part");
        Ok(Combo {
            modifiers: keys,
            key: last[0],
            text: s.trim().to_string(),
        })
    }

    /// Every key code this combination involves.
    pub fn codes(&self) -> impl Iterator<Item = KeyCode> + '_ {
        self.modifiers
            .iter()
            .flatten()
            .copied()
            .chain(std::iter::once(self.key))
    }
}

/// Key events → actions, for one keyboard. A binding fires when its key goes down while exactly
/// its modifiers are held (so `KEY_F12` does not fire on Ctrl+F12); auto-repeat never fires.
#[derive(Debug, Clone)]
pub struct KeyMapper {
    bindings: Vec<(Combo, Action)>,
    held: HashSet<KeyCode>,
}

impl KeyMapper {
    pub fn new(bindings: Vec<(Combo, Action)>) -> Self {
        Self {
            bindings,
            held: HashSet::new(),
        }
    }

    /// Bindings from the `[hotkey]` section (empty keys are skipped).
    pub fn from_config(cfg: &crate::config::HotkeyConfig) -> Result<Self, ComboError> {
        let mut b = vec![];
        for (text, action) in [
            (&cfg.key, Action::Detail),
            (&cfg.repeat_key, Action::Repeat),
            (&cfg.pause_key, Action::TogglePause),
            (&cfg.changed_key, Action::Changed),
            (&cfg.read_key, Action::Read),
            (&cfg.hush_key, Action::Hush),
            (&cfg.watches_key, Action::Watches),
            (&cfg.recall_key, Action::RecallView),
            (&cfg.new_key, Action::NewConversation),
            (&cfg.mode_key, Action::ToggleMode),
        ] {
            if !text.trim().is_empty() {
                b.push((Combo::parse(text)?, action));
            }
        }
        Ok(Self::new(b))
    }

    pub fn is_empty(&self) -> bool {
        self.bindings.is_empty()
    }

    /// The main keys of every binding (a device must have one of them to be useful).
    pub fn main_keys(&self) -> Vec<KeyCode> {
        self.bindings.iter().map(|(c, _)| c.key).collect()
    }

    pub fn on_event(&mut self, ev: &InputEvent) -> Option<Action> {
        if ev.event_type() != EventType::KEY {
            return None;
        }
        let key = KeyCode::new(ev.code());
        match ev.value() {
            0 => {
                self.held.remove(&key);
                None
            }
            1 => {
                self.held.insert(key);
                self.bindings
                    .iter()
                    .find(|(c, _)| c.key == key && self.modifiers_match(c))
                    .map(|(_, a)| *a)
            }
            _ => None, // 2 = auto-repeat
        }
    }

    fn modifiers_match(&self, c: &Combo) -> bool {
        let all_held = c
            .modifiers
            .iter()
            .all(|alts| alts.iter().any(|k| self.held.contains(k)));
        let no_extra = self
            .held
            .iter()
            .filter(|k| **k != c.key && is_modifier(**k))
            .all(|k| c.modifiers.iter().any(|alts| alts.contains(k)));
        all_held && no_extra
    }

    /// Forget held keys (a device went away).
    pub fn reset(&mut self) {
        self.held.clear();
    }
}

/// Why no keyboard could be watched; each message says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HotkeyProblem {
    #[error("no input devices under /dev/input: no keyboard to watch for the hotkey")]
    NoDevices,
    #[error("cannot read the keyboard ({0}: permission denied): add yourself to the `input` group (`sudo usermod -aG input $USER`, then log out and in again)")]
    PermissionDenied(String),
    #[error("cannot open {0}: {1}")]
    Open(String, String),
    #[error("none of the readable input devices has the hotkey ({0})")]
    NoKeyboard(String),
}

/// The event devices to consider: the configured one, or every `/dev/input/event*`.
pub fn candidate_paths(device: &str) -> Vec<PathBuf> {
    if !device.is_empty() {
        return vec![PathBuf::from(device)];
    }
    let mut v: Vec<PathBuf> = std::fs::read_dir("/dev/input")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("event"))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Opens (never grabs) every candidate device that has one of `keys`.
pub fn open_keyboards(
    device: &str,
    keys: &[KeyCode],
) -> Result<Vec<(PathBuf, evdev::Device)>, HotkeyProblem> {
    let paths = candidate_paths(device);
    if paths.is_empty() {
        return Err(HotkeyProblem::NoDevices);
    }
    let mut out = vec![];
    let mut denied = vec![];
    let mut other = None;
    for p in paths {
        match evdev::Device::open(&p) {
            Ok(d) => {
                let has = d
                    .supported_keys()
                    .is_some_and(|s| keys.iter().any(|k| s.contains(*k)));
                if has {
                    out.push((p, d));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                denied.push(p.display().to_string())
            }
            Err(e) => other = Some(HotkeyProblem::Open(p.display().to_string(), e.to_string())),
        }
    }
    if !out.is_empty() {
        return Ok(out);
    }
    if !denied.is_empty() {
        let first = denied[0].clone();
        let shown = if denied.len() > 1 {
            format!("{first} and {} more", denied.len() - 1)
        } else {
            first
        };
        return Err(HotkeyProblem::PermissionDenied(shown));
    }
    if let Some(o) = other {
        if !device.is_empty() {
            return Err(o);
        }
    }
    Err(HotkeyProblem::NoKeyboard(
        keys.iter()
            .map(|k| format!("{k:?}"))
            .collect::<Vec<_>>()
            .join(", "),
    ))
}

/// Watches keyboards until `stop` closes, calling `on_action` for each hotkey press. Devices that
/// appear later (a keyboard plugged in) are picked up every few seconds; vanished ones dropped.
/// `on_problem` is told once when no keyboard can be watched at start.
pub fn watch(
    device: &str,
    mapper: KeyMapper,
    stop: &Receiver<()>,
    mut on_action: impl FnMut(Action),
    on_problem: impl FnOnce(&HotkeyProblem),
) {
    let keys = mapper.main_keys();
    let mut devices: HashMap<PathBuf, (evdev::Device, KeyMapper)> = HashMap::new();
    let add = |found: Vec<(PathBuf, evdev::Device)>,
               devices: &mut HashMap<PathBuf, (evdev::Device, KeyMapper)>| {
        for (p, d) in found {
            if devices.contains_key(&p) {
                continue;
            }
            if let Err(e) = d.set_nonblocking(true) {
                tracing::warn!("hotkey: {}: {e}", p.display());
                continue;
            }
            tracing::info!(
                "hotkey: watching {} ({})",
                p.display(),
                d.name().unwrap_or("unnamed device")
            );
            devices.insert(p, (d, mapper.clone()));
        }
    };
    match open_keyboards(device, &keys) {
        Ok(found) => add(found, &mut devices),
        Err(problem) => on_problem(&problem),
    }
    let mut last_scan = Instant::now();
    loop {
        match stop.try_recv() {
            Err(crossbeam_channel::TryRecvError::Empty) => {}
            _ => return,
        }
        if last_scan.elapsed() > Duration::from_secs(5) {
            last_scan = Instant::now();
            if let Ok(found) = open_keyboards(device, &keys) {
                let new: Vec<_> = found
                    .into_iter()
                    .filter(|(p, _)| !devices.contains_key(p))
                    .collect();
                add(new, &mut devices);
            }
        }
        if devices.is_empty() {
            match stop.recv_timeout(Duration::from_millis(500)) {
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => continue,
                _ => return,
            }
        }
        let paths: Vec<PathBuf> = devices.keys().cloned().collect();
        let mut fds: Vec<libc::pollfd> = paths
            .iter()
            .map(|p| libc::pollfd {
                fd: devices[p].0.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: `fds` is a valid array of pollfd for the duration of the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 300) };
        if n <= 0 {
            continue;
        }
        let mut gone = vec![];
        for (fd, p) in fds.iter().zip(&paths) {
            if fd.revents == 0 {
                continue;
            }
            let (dev, map) = devices.get_mut(p).expect("path from the map");
            if fd.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
                gone.push(p.clone());
                continue;
            }
            match dev.fetch_events() {
                Ok(events) => {
                    for ev in events {
                        if let Some(a) = map.on_event(&ev) {
                            on_action(a);
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    tracing::warn!("hotkey: {}: {e}; no longer watched", p.display());
                    gone.push(p.clone());
                }
            }
        }
        for p in gone {
            devices.remove(&p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: KeyCode, value: i32) -> InputEvent {
        InputEvent::new(EventType::KEY.0, k.code(), value)
    }

    /// Feeds a script of key events ("+F12" down, "-F12" up, "*F12" auto-repeat) and returns the
    /// actions fired, one letter per event ("." = none, "D" detail, "R" repeat, "P" pause,
    /// "C" changed, "T" read text).
    fn run(bindings: &[(&str, Action)], script: &str) -> String {
        let b = bindings
            .iter()
            .map(|(c, a)| (Combo::parse(c).unwrap(), *a))
            .collect();
        let mut m = KeyMapper::new(b);
        script
            .split_whitespace()
            .map(|tok| {
                let (sign, name) = tok.split_at(1);
                let code = parse_key(name).unwrap()[0];
                let value = match sign {
                    "+" => 1,
                    "-" => 0,
                    "*" => 2,
                    _ => panic!("bad token {tok}"),
                };
                match m.on_event(&key(code, value)) {
                    None => '.',
                    Some(Action::Detail) => 'D',
                    Some(Action::Repeat) => 'R',
                    Some(Action::TogglePause) => 'P',
                    Some(Action::Changed) => 'C',
                    Some(Action::Read) => 'T',
                    Some(Action::Hush) => 'H',
                    Some(Action::Watches) => 'W',
                    Some(Action::RecallView) => 'V',
                    Some(Action::NewConversation) => 'N',
                    Some(Action::ToggleMode) => 'M',
                }
            })
            .collect()
    }

    const F12: &[(&str, Action)] = &[("KEY_F12", Action::Detail)];
    const META_D: &[(&str, Action)] = &[
        ("KEY_LEFTMETA+KEY_D", Action::Detail),
        ("CTRL+ALT+KEY_R", Action::Repeat),
        ("KEY_PAUSE", Action::TogglePause),
        ("KEY_ESC", Action::Hush),
    ];

    #[test]
    fn single_key_fires_once_per_press() {
        assert_eq!(run(F12, "+F12 -F12"), "D.");
        assert_eq!(run(F12, "+F12 *F12 *F12 -F12 +F12 -F12"), "D...D.");
    }

    #[test]
    fn the_hush_key_fires() {
        assert_eq!(run(META_D, "+ESC -ESC +PAUSE -PAUSE"), "H.P.");
    }

    #[test]
    fn other_keys_do_nothing() {
        assert_eq!(run(F12, "+A -A +F11 -F11"), "....");
    }

    #[test]
    fn extra_modifier_blocks_a_plain_key() {
        assert_eq!(run(F12, "+LEFTCTRL +F12 -F12 -LEFTCTRL +F12"), "....D");
    }

    #[test]
    fn combo_needs_its_modifier_held_first() {
        assert_eq!(run(META_D, "+D -D"), "..");
        assert_eq!(run(META_D, "+LEFTMETA +D -D -LEFTMETA"), ".D..");
        assert_eq!(
            run(META_D, "+RIGHTMETA +D"),
            "..",
            "KEY_LEFTMETA means the left key"
        );
        assert_eq!(run(META_D, "+D +LEFTMETA"), "..", "modifier after the key");
    }

    #[test]
    fn generic_modifiers_accept_either_side() {
        assert_eq!(run(META_D, "+RIGHTCTRL +LEFTALT +R"), "..R");
        assert_eq!(run(META_D, "+LEFTCTRL +R"), "..");
        assert_eq!(run(META_D, "+PAUSE -PAUSE +LEFTSHIFT +PAUSE"), "P...");
    }

    #[test]
    fn released_modifier_no_longer_counts() {
        assert_eq!(
            run(META_D, "+LEFTMETA -LEFTMETA +D -D +LEFTMETA +D"),
            ".....D"
        );
    }

    #[test]
    fn non_key_events_are_ignored() {
        let mut m = KeyMapper::new(vec![(Combo::parse("KEY_F12").unwrap(), Action::Detail)]);
        let rel = InputEvent::new(EventType::RELATIVE.0, 0, 1);
        assert_eq!(m.on_event(&rel), None);
        let syn = InputEvent::new(EventType::SYNCHRONIZATION.0, 0, 0);
        assert_eq!(m.on_event(&syn), None);
    }

    #[test]
    fn parsing_names_and_errors() {
        let c = Combo::parse("KEY_LEFTMETA+KEY_D").unwrap();
        assert_eq!(c.key, KeyCode::KEY_D);
        assert_eq!(c.modifiers, vec![vec![KeyCode::KEY_LEFTMETA]]);
        assert_eq!(Combo::parse("f12").unwrap().key, KeyCode::KEY_F12);
        assert_eq!(
            Combo::parse(" ctrl + d ").unwrap().modifiers,
            vec![CTRL.to_vec()]
        );
        assert_eq!(Combo::parse(""), Err(ComboError::Empty));
        assert_eq!(Combo::parse("KEY_A+"), Err(ComboError::Empty));
        assert!(matches!(
            Combo::parse("KEY_LEFTMETA+KEY_DD"),
            Err(ComboError::UnknownKey { name, .. }) if name == "KEY_DD"
        ));
        assert!(matches!(
            Combo::parse("KEY_A+KEY_A"),
            Err(ComboError::Repeated { .. })
        ));
    }

    #[test]
    fn config_bindings_skip_empty_keys() {
        let cfg = crate::config::HotkeyConfig::default();
        let m = KeyMapper::from_config(&cfg).unwrap();
        assert_eq!(m.main_keys(), vec![KeyCode::KEY_F12]);
        let off = crate::config::HotkeyConfig {
            key: String::new(),
            ..cfg
        };
        assert!(KeyMapper::from_config(&off).unwrap().is_empty());
    }

    #[test]
    fn changed_and_read_keys_are_bound() {
        let cfg = crate::config::HotkeyConfig {
            changed_key: "KEY_F11".into(),
            read_key: "SHIFT+KEY_F12".into(),
            ..Default::default()
        };
        let m = KeyMapper::from_config(&cfg).unwrap();
        let b: Vec<(KeyCode, Action)> = m.bindings.iter().map(|(c, a)| (c.key, *a)).collect();
        assert_eq!(
            b,
            [
                (KeyCode::KEY_F12, Action::Detail),
                (KeyCode::KEY_F11, Action::Changed),
                (KeyCode::KEY_F12, Action::Read),
            ]
        );
        const KEYS: &[(&str, Action)] = &[
            ("KEY_F12", Action::Detail),
            ("KEY_F11", Action::Changed),
            ("SHIFT+KEY_F12", Action::Read),
        ];
        assert_eq!(run(KEYS, "+F12 -F12 +F11 -F11 +LEFTSHIFT +F12"), "D.C..T");
    }

    #[test]
    fn watches_and_recall_keys_are_bound() {
        let cfg = crate::config::HotkeyConfig {
            key: String::new(),
            watches_key: "KEY_F9".into(),
            recall_key: "CTRL+KEY_F9".into(),
            ..Default::default()
        };
        let m = KeyMapper::from_config(&cfg).unwrap();
        let b: Vec<(KeyCode, Action)> = m.bindings.iter().map(|(c, a)| (c.key, *a)).collect();
        assert_eq!(
            b,
            [
                (KeyCode::KEY_F9, Action::Watches),
                (KeyCode::KEY_F9, Action::RecallView)
            ]
        );
        const KEYS: &[(&str, Action)] = &[
            ("KEY_F9", Action::Watches),
            ("CTRL+KEY_F9", Action::RecallView),
        ];
        assert_eq!(run(KEYS, "+F9 -F9 +LEFTCTRL +F9 -F9 -LEFTCTRL"), "W..V..");
    }

    #[test]
    fn the_new_conversation_key_is_bound() {
        let cfg = crate::config::HotkeyConfig {
            new_key: "CTRL+KEY_F12".into(),
            mode_key: "KEY_F10".into(),
            ..Default::default()
        };
        let m = KeyMapper::from_config(&cfg).unwrap();
        let b: Vec<(KeyCode, Action)> = m.bindings.iter().map(|(c, a)| (c.key, *a)).collect();
        assert_eq!(
            b,
            [
                (KeyCode::KEY_F12, Action::Detail),
                (KeyCode::KEY_F12, Action::NewConversation),
                (KeyCode::KEY_F10, Action::ToggleMode),
            ]
        );
        const KEYS: &[(&str, Action)] = &[
            ("KEY_F12", Action::Detail),
            ("CTRL+KEY_F12", Action::NewConversation),
            ("KEY_F10", Action::ToggleMode),
        ];
        assert_eq!(
            run(KEYS, "+F12 -F12 +LEFTCTRL +F12 -F12 -LEFTCTRL +F10"),
            "D..N..M"
        );
    }
}
