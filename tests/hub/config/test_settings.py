"""Configuration: the directory form and the single-file form, and one test per kind of
mistake, each asserting that the message names the file, the line and the field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hub.config import settings as config
from hub.rules.windows import ALL_DAYS

EXE = str(Path(sys.executable).with_name("tryggheim"))

SITE = """\
[site]
id = "home-7"
timezone = "Europe/Oslo"

[hub]
id = "hub-7"
data_dir = "var"

[mqtt]
host = "127.0.0.1"
port = 1883

[radio]
kind = "virtual"
"""

DEVICES = """\
[[device]]
id = "pendant-1"
role = "pendant"
mac = "C0:FF:EE:00:00:01"
room = "living room"

[[device]]
id = "bed-1"
role = "bed"
mac = "C0:FF:EE:00:00:02"
room = "bedroom"

[[device]]
id = "door-1"
role = "door"
mac = "C0:FF:EE:00:00:03"

[[device]]
id = "pir-hall"
role = "pir"
mac = "C0:FF:EE:00:00:04"
heartbeat_s = 300
"""

RULES = """\
[button]
cancel_event = "hold_release"
cancel_window_s = 30

[[bed_exit]]
name = "Besto"
bed = "bed-1"
window = "20:30-06:00"
return_min = 30

[[wandering]]
door = "door-1"
window = "22:00-06:00"
days = "mon-fri"
return_min = 0
inside = ["pir-hall"]

[[inactivity]]
window = "08:00-22:00"
hours = 4

[battery]
confirm_reports = 3
repeat_h = 24

[battery.pendant]
warn_percent = 30
critical_percent = 10

[charging]
remind_at = "19:30"
off_charger_by = "09:00"

[silent]
missed_heartbeats = 3

[silent.heartbeat_s]
pendant = 600
"""

ROUTING = """\
[[route]]
receiver = "relatives"
kinds = ["alarm", "alarm_cleared"]
max_priority = 2
"""


def make_dir(tmp: Path, **files: str) -> Path:
    d = tmp / "etc"
    d.mkdir(exist_ok=True)
    base = {"site.toml": SITE, "devices.toml": DEVICES, "rules.toml": RULES,
            "routing.toml": ROUTING, "retention.toml": "events_days = 14\n"}
    for name, text in {**base, **{k.replace("_", ".", 1) if k.endswith("_toml") else k: v
                                  for k, v in files.items()}}.items():
        if text is None:
            continue
        (d / name.replace("_toml", ".toml")).write_text(text)
    return d


def problems_of(path: Path) -> list[str]:
    with pytest.raises(config.ConfigError) as e:
        config.load(path)
    return e.value.problems


def one_problem(path: Path) -> str:
    ps = problems_of(path)
    assert len(ps) == 1, ps
    return ps[0]


def test_directory_form_loads_everything(tmp_path: Path) -> None:
    cfg = config.load(make_dir(tmp_path))
    assert cfg.site == "home-7" and cfg.data_dir == tmp_path / "etc" / "var"
    assert cfg.devices["pir-hall"].heartbeat_s == 300
    r = cfg.rules
    assert [b.name for b in r.bed_exit] == ["Besto"] and r.bed_exit[0].return_min == 30
    assert r.wandering[0].return_min == 0 and r.wandering[0].inside == ("pir-hall",)
    assert r.wandering[0].window.days == frozenset(range(5))
    assert r.inactivity[0].window.days == ALL_DAYS and r.inactivity[0].hours == 4.0
    assert r.battery.limits["pendant"].warn_percent == 30
    assert r.charging.remind_at_min == 19 * 60 + 30
    assert r.button.cancel_window_s == 30
    assert [x.receiver for x in cfg.routes] == ["relatives"]
    assert cfg.retention.events_days == 14 and cfg.retention.audit_days == 730
    assert {p.name for p in cfg.sources} == {"site.toml", "devices.toml", "rules.toml",
                                             "routing.toml", "retention.toml"}


def test_single_file_form_still_works(tmp_path: Path) -> None:
    rules = "".join(
        line.replace("[[", "[[rules.").replace("[", "[rules.", 1) if line.startswith("[")
        and not line.startswith("[[") else line.replace("[[", "[[rules.")
        for line in RULES.splitlines(keepends=True))
    f = tmp_path / "hub.toml"
    f.write_text(SITE + "\n" + DEVICES + "\n" + rules + "\n" + ROUTING)
    cfg = config.load(f)
    assert cfg.rules.bed_exit[0].bed == "bed-1" and cfg.routes[0].receiver == "relatives"
    f.write_text(f.read_text().replace('window = "20:30-06:00"', 'window = "20:30-6:00"'))
    p = one_problem(f)
    assert p.startswith(f"{f}:") and "rules.bed_exit[0].window" in p
    line = int(p.split(":")[1])
    assert 'window = "20:30-6:00"' in f.read_text().splitlines()[line - 1]


def line_of(path: Path, needle: str) -> int:
    return next(i for i, t in enumerate(path.read_text().splitlines(), 1) if needle in t)


# One test per kind of mistake: the message names the file, the line and the field.

def test_toml_syntax_error(tmp_path: Path) -> None:
    d = make_dir(tmp_path, rules_toml=RULES.replace('bed = "bed-1"', 'bed = "bed-1'))
    p = one_problem(d)
    assert p.startswith(f"{d / 'rules.toml'}:7: column 13: ")


def test_unknown_key_with_suggestion(tmp_path: Path) -> None:
    d = make_dir(tmp_path, rules_toml=RULES.replace("return_min = 30", "return_mins = 30"))
    p = one_problem(d)
    n = line_of(d / "rules.toml", "return_mins")
    assert p == (f"{d / 'rules.toml'}:{n}: bed_exit[0].return_mins: unknown setting "
                 "(did you mean 'return_min'?)")


def test_wrong_type(tmp_path: Path) -> None:
    d = make_dir(tmp_path, rules_toml=RULES.replace("hours = 4", 'hours = "four"'))
    p = one_problem(d)
    assert p.startswith(f"{d / 'rules.toml'}:{line_of(d / 'rules.toml', 'hours')}: "
                        "inactivity[0].hours: expected int or float")


def test_out_of_range(tmp_path: Path) -> None:
    d = make_dir(tmp_path, rules_toml=RULES.replace("return_min = 30", "return_min = 0"))
    p = one_problem(d)
    assert p == (f"{d / 'rules.toml'}:{line_of(d / 'rules.toml', 'return_min = 0')}: "
                 "bed_exit[0].return_min: 0 is out of range 1..1440")


def test_missing_required_field(tmp_path: Path) -> None:
    d = make_dir(tmp_path, devices_toml=DEVICES.replace('role = "bed"\n', ""))
    p = one_problem(d)
    # Not written down, so the line named is the table it is missing from.
    assert p == f"{d / 'devices.toml'}:7: device[1].role: missing"


def test_rule_references_unknown_device(tmp_path: Path) -> None:
    d = make_dir(tmp_path, rules_toml=RULES.replace('bed = "bed-1"', 'bed = "bed-2"'))
    p = one_problem(d)
    assert p == (f"{d / 'rules.toml'}:{line_of(d / 'rules.toml', 'bed-2')}: bed_exit[0].bed: "
                 "no device 'bed-2' in the devices list")


def test_rule_references_device_of_wrong_role(tmp_path: Path) -> None:
    d = make_dir(tmp_path, rules_toml=RULES.replace('inside = ["pir-hall"]',
                                                    'inside = ["door-1"]'))
    p = one_problem(d)
    assert "wandering[0].inside" in p and "door-1' is a door, expected pir" in p
    assert p.startswith(f"{d / 'rules.toml'}:{line_of(d / 'rules.toml', 'inside')}:")


@pytest.mark.parametrize("window, message", [
    ("20:30-06:60", "'06:60' is not a time of day"),
    ("20:30", "is not a window like 20:30-06:00"),
    ("22:00-22:00", "is empty"),
])
def test_malformed_window(tmp_path: Path, window: str, message: str) -> None:
    d = make_dir(tmp_path, rules_toml=RULES.replace('"20:30-06:00"', f'"{window}"'))
    p = one_problem(d)
    assert p.startswith(f"{d / 'rules.toml'}:{line_of(d / 'rules.toml', window)}: "
                        "bed_exit[0].window: ") and message in p


def test_two_rules_of_a_kind_need_distinct_names(tmp_path: Path) -> None:
    second = '[[bed_exit]]\nbed = "bed-1"\nwindow = "22:00-07:00"\ndays = "sat,sun"\n'
    d = make_dir(tmp_path, rules_toml=RULES.replace('name = "Besto"\n', "") + second)
    p = one_problem(d)
    assert p.startswith(f"{d / 'rules.toml'}:") and "bed_exit[1].name: another rule" in p
    d = make_dir(tmp_path, rules_toml=RULES + second + 'name = "weekend"\n')
    assert [b.name for b in config.load(d).rules.bed_exit] == ["Besto", "weekend"]


def test_bad_days(tmp_path: Path) -> None:
    d = make_dir(tmp_path, rules_toml=RULES.replace('"mon-fri"', '"mon-fry"'))
    p = one_problem(d)
    assert p.startswith(f"{d / 'rules.toml'}:{line_of(d / 'rules.toml', 'mon-fry')}: "
                        "wandering[0].days: ")


def test_inconsistent_thresholds(tmp_path: Path) -> None:
    d = make_dir(tmp_path, rules_toml=RULES.replace("critical_percent = 10",
                                                    "critical_percent = 40"))
    p = one_problem(d)
    assert "battery.pendant.critical_percent: 40 must be below warn_percent (30)" in p


def test_duplicate_device_and_bad_mac(tmp_path: Path) -> None:
    d = make_dir(tmp_path, devices_toml=DEVICES.replace('id = "door-1"', 'id = "bed-1"')
                 .replace("C0:FF:EE:00:00:04", "C0:FF:EE:00:04"))
    ps = problems_of(d)
    f = d / "devices.toml"
    assert f"{f}:{line_of(f, 'C0:FF:EE:00:04')}: device[3].mac: 'C0:FF:EE:00:04' is not a " \
           "MAC address" in ps
    assert any(p.startswith(f"{f}:") and "device[2].id: duplicate device id 'bed-1'" in p
               for p in ps)


def test_section_in_the_wrong_file(tmp_path: Path) -> None:
    d = make_dir(tmp_path, devices_toml=DEVICES + '\n[mqtt]\nport = 1884\n')
    p = one_problem(d)
    assert p.startswith(f"{d / 'devices.toml'}") and "mqtt" in p and "site.toml" in p


def test_missing_site_file(tmp_path: Path) -> None:
    d = make_dir(tmp_path)
    (d / "site.toml").unlink()
    assert one_problem(d) == f"{d}/site.toml: missing (a config directory needs site.toml)"


def test_unknown_time_zone(tmp_path: Path) -> None:
    d = make_dir(tmp_path, site_toml=SITE.replace("Europe/Oslo", "Europe/Olso"))
    assert one_problem(d) == (f"{d / 'site.toml'}:3: site.timezone: unknown time zone "
                              "'Europe/Olso'")


def test_routing_unknown_kind(tmp_path: Path) -> None:
    d = make_dir(tmp_path, routing_toml=ROUTING.replace('"alarm_cleared"', '"alarms"'))
    p = one_problem(d)
    assert p.startswith(f"{d / 'routing.toml'}:3: route[0].kinds[1]: 'alarms' is not one of")


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    d = make_dir(tmp_path, rules_toml=RULES.replace("return_min = 30", "return_min = -1")
                 .replace("hours = 4", "hours = 400").replace('"19:30"', '"7pm"'))
    ps = problems_of(d)
    assert len(ps) == 3
    assert [p.split(": ")[1] for p in ps] == ["bed_exit[0].return_min", "inactivity[0].hours",
                                              "charging.remind_at"]


def test_config_check_command(tmp_path: Path) -> None:
    from hub.config import keys

    d = make_dir(tmp_path)
    keys.write(d / "keys.toml", {k: bytes(16) for k in ("pendant-1", "bed-1", "door-1")})
    missing = subprocess.run([EXE, "config", "check", str(d)], capture_output=True, text=True,
                             timeout=60)
    assert missing.returncode == 1
    assert f"{d / 'keys.toml'}: keys.pir-hall: no key for configured device" in missing.stdout
    keys.write(d / "keys.toml", {k: bytes(16) for k in ("pendant-1", "bed-1", "door-1",
                                                        "pir-hall")})
    ok = subprocess.run([EXE, "config", "check", str(d)], capture_output=True, text=True,
                        timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert "OK: site home-7, 4 devices, 1 bed-exit, 1 wandering, 1 inactivity" in ok.stdout
    (d / "rules.toml").write_text(RULES.replace('bed = "bed-1"', 'bed = "bed-9"')
                                  .replace("hours = 4", "hours = 0"))
    bad = subprocess.run([EXE, "config", "check", str(d), "--json"], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 1
    import json

    report = json.loads(bad.stdout)
    assert report["ok"] is False and len(report["problems"]) == 2
    assert all(p.startswith(f"{d / 'rules.toml'}:") for p in report["problems"])


def test_the_documented_example_config_is_valid() -> None:
    root = Path(__file__).resolve().parents[3] / "docs" / "example-config"
    cfg = config.load(root)
    assert cfg.rules.bed_exit[0].return_min == 30
    assert cfg.rules.wandering[0].inside == ("pir-hall",)
    assert cfg.rules.silent.limit_s("pendant") == 1800  # silent pendant within 30 minutes


def test_cancel_gesture_cannot_be_an_alarm_press(tmp_path: Path) -> None:
    d = make_dir(tmp_path, rules_toml=RULES.replace('"hold_release"', '"double_press"'))
    p = one_problem(d)
    assert p.startswith(f"{d / 'rules.toml'}:2: button.cancel_event: 'double_press' is not")


def test_rule_at_the_top_of_a_single_file_says_where_it_belongs(tmp_path: Path) -> None:
    f = tmp_path / "hub.toml"
    f.write_text(SITE + "\n" + DEVICES + '\n[[bed_exit]]\nbed = "bed-1"\nwindow = "20:30-06:00"\n')
    p = one_problem(f)
    assert p.startswith(f"{f}:{line_of(f, '[[bed_exit]]')}: bed_exit: a rule: in a single file")
    assert "[[rules.bed_exit]]" in p


@pytest.mark.parametrize("section, text, home", [
    ("mqtt", "\n[mqtt]\nport = 1884\n", "site.toml"),
    ("device", '\n[[device]]\nid = "pir-2"\nrole = "pir"\n', "devices.toml"),
    ("route", '\n[[route]]\nreceiver = "relatives"\n', "routing.toml"),
    ("site", '\n[site]\nid = "home-8"\n', "site.toml"),
])
def test_another_files_section_in_rules_toml_names_its_file(tmp_path: Path, section: str,
                                                             text: str, home: str) -> None:
    d = make_dir(tmp_path, rules_toml=RULES + text)
    line = len(RULES.splitlines()) + 2
    assert one_problem(d) == (f"{d / 'rules.toml'}:{line}: {section}: does not belong in"
                              f" rules.toml (put it in {home})")


def test_a_rule_in_site_toml_names_rules_toml(tmp_path: Path) -> None:
    d = make_dir(tmp_path, site_toml=SITE + "\n[button]\ncancel_window_s = 10\n")
    line = len(SITE.splitlines()) + 2
    assert one_problem(d) == (f"{d / 'site.toml'}:{line}: button: does not belong in site.toml"
                              " (put it in rules.toml)")


def test_a_rule_in_retention_toml_and_a_misspelt_section(tmp_path: Path) -> None:
    d = make_dir(tmp_path, retention_toml='events_days = 14\n\n[[bed_exit]]\nbed = "bed-1"\n',
                 site_toml=SITE + '\n[radoi]\nkind = "virtual"\n')
    ps = problems_of(d)
    assert f"{d / 'retention.toml'}:3: bed_exit: does not belong in retention.toml (put it in" \
        " rules.toml)" in ps
    assert f"{d / 'site.toml'}:{len(SITE.splitlines()) + 2}: radoi: unknown section (did you" \
        " mean 'radio'?)" in ps
    assert not any("no file" in p for p in ps)


def test_bed_exit_require_in_bed_and_wandering_pir_holdoff_are_read(tmp_path: Path) -> None:
    rules = RULES.replace("return_min = 30", "return_min = 30\nrequire_in_bed = true").replace(
        'inside = ["pir-hall"]', 'inside = ["pir-hall"]\npir_holdoff_s = 120')
    cfg = config.load(make_dir(tmp_path, rules_toml=rules))
    assert cfg.rules.bed_exit[0].require_in_bed is True
    assert cfg.rules.wandering[0].pir_holdoff_s == 120
    bad = make_dir(tmp_path, rules_toml=rules.replace("require_in_bed = true",
                                                      'require_in_bed = "yes"'))
    assert "bed_exit[0].require_in_bed: expected bool" in one_problem(bad)
