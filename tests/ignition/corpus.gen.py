#!/usr/bin/env python3
"""Writes the Ignition conformance corpus (tests/ignition/**/*.ign).

Each config is written out as JSON here so that the base64, gzip and hash
values in them are computed rather than pasted. Run from anywhere:
    python3 tests/ignition/corpus.gen.py
Configs named *.fail.ign must fail on both Ignition and ours; invalid/ holds
configs that ignition-validate rejects; v2/NAME.ign is a spec 2.x config and
v2/NAME.v3.ign its translation by ign-converter's rules (plus networkd units
as files), which the real Ignition 2.14 (no 2.x support) runs instead.
"""
import base64, gzip, hashlib, json, os, urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
KEY1 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAII/VprygXieozd8ArHcNCqRx2fcRc1py2HBbYhn76GNy test@oracle"
KEY2 = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 second@oracle"


def plain(s):
    return "data:," + urllib.parse.quote(s, safe="")


def b64(s, media=""):
    return f"data:{media};base64," + base64.b64encode(s.encode()).decode()


def gz(s):
    return "data:;base64," + base64.b64encode(gzip.compress(s.encode(), mtime=0)).decode()


def v(ver, **rest):
    return {"ignition": {"version": ver}, **rest}


UNIT = "[Unit]\nDescription=App\n[Service]\nExecStart=/usr/bin/true\n[Install]\nWantedBy=multi-user.target\n"

valid = {
    "v30-files-plain.ign": v("3.0.0", storage={"files": [
        {"path": "/etc/app/plain.txt", "contents": {"source": plain("hello world\n100% plain, (with) symbols;=/?\n")}},
        {"path": "/opt/a/b/c/d/deep.txt", "mode": 416, "contents": {"source": plain("deep\n")}}]}),
    "v31-base64.ign": v("3.1.0", storage={"files": [
        {"path": "/etc/app/b64.toml", "mode": 384, "contents": {"source": b64('key = "value"\n', "text/plain")}},
        {"path": "/etc/app/b64-charset", "contents": {"source": b64("charset\n", "text/plain;charset=utf-8")}}]}),
    "v32-gzip.ign": v("3.2.0", storage={"files": [
        {"path": "/etc/app/gz.txt", "mode": 420, "contents": {"compression": "gzip", "source": gz("hello gzip\n" * 50)}},
        {"path": "/etc/app/nocomp.txt", "contents": {"compression": "", "source": plain("empty compression string\n")}},
        {"path": "/etc/app/nullcomp.txt", "contents": {"compression": None, "source": plain("null compression\n")}}]}),
    "v33-append.ign": v("3.3.0", storage={"files": [
        {"path": "/etc/app/appended", "append": [{"source": plain("line2\n")}, {"source": gz("line3\n"), "compression": "gzip"}],
         "contents": {"source": plain("line1\n")}},
        {"path": "/etc/app/append-only", "append": [{"source": plain("only appended\n")}]},
        {"path": "/etc/motd", "append": [{"source": plain("appended to the image's motd\n")}]}]}),
    "v34exp-modes.ign": v("3.4.0-experimental", storage={
        # Files keep no setuid/setgid under Ignition 2.14 (chmod, then chown), 2.15+ and ours keep
        # them: directories only here, files in provision's unit tests.
        "files": [{"path": "/usr/local/bin/tool", "mode": 493, "contents": {"source": plain("#!/bin/sh\n")}},
                  {"path": "/etc/app/default-mode", "contents": {"source": plain("0644 by default\n")}}],
        "directories": [{"path": "/srv/sticky", "mode": 1023}, {"path": "/srv/setgid", "mode": 1517}, {"path": "/srv/default"}, {"path": "/srv/private", "mode": 448}]}),
    "overwrite-true.ign": v("3.3.0", storage={
        "files": [{"path": "/etc/hostname", "overwrite": True, "mode": 420, "contents": {"source": plain("appliance01\n")}}],
        "links": [{"path": "/etc/localtime", "overwrite": True, "target": "/usr/share/zoneinfo/Europe/Berlin"}],
        "directories": [{"path": "/etc/default", "overwrite": False, "mode": 488}]}),
    "overwrite-false-file.fail.ign": v("3.3.0", storage={"files": [
        {"path": "/etc/hostname", "contents": {"source": plain("not allowed\n")}}]}),
    "overwrite-false-keep.ign": v("3.3.0", storage={"files": [
        {"path": "/etc/issue", "mode": 384, "user": {"id": 1}, "group": {"id": 4}},
        {"path": "/etc/issue.net", "overwrite": False}]}),
    "dir-existing.ign": v("3.2.0", storage={"directories": [
        {"path": "/etc/default", "mode": 488, "group": {"name": "adm"}},
        {"path": "/etc/systemd", "user": {"id": 2}},
        {"path": "/var/lib/app/data", "mode": 448, "user": {"name": "www-data"}, "group": {"name": "www-data"}}]}),
    "dir-on-file.fail.ign": v("3.3.0", storage={"directories": [{"path": "/etc/hostname"}]}),
    "links-symlink.ign": v("3.1.0", storage={"links": [
        {"path": "/usr/local/bin/app", "target": "/opt/app/bin/app"},
        {"path": "/etc/app/relative", "target": "../hostname"},
        {"path": "/srv/deep/er/link", "target": "/nonexistent/target", "user": {"id": 33}, "group": {"id": 33}},
        {"path": "/etc/alternatives-like", "target": "/etc/hostname"}]}),
    "links-existing-same.ign": v("3.3.0", storage={"links": [
        {"path": "/etc/systemd/system/timers.target.wants/apt-daily.timer", "target": "/lib/systemd/system/apt-daily.timer"}]}),
    "links-hard.ign": v("3.3.0", storage={
        "files": [{"path": "/etc/app/deeper/original.txt", "mode": 384, "contents": {"source": plain("shared inode\n")}}],
        "links": [{"path": "/etc/hardlink", "target": "/etc/app/deeper/original.txt", "hard": True},
                  {"path": "/etc/app/deeper/second", "target": "/etc/app/deeper/original.txt", "hard": True}]}),
    "link-conflict.fail.ign": v("3.3.0", storage={"links": [{"path": "/etc/localtime", "target": "/usr/share/zoneinfo/UTC"}]}),
    "units-contents.ign": v("3.3.0", systemd={"units": [
        {"name": "app.service", "enabled": True, "contents": UNIT},
        {"name": "app-helper.timer", "contents": "[Timer]\nOnBootSec=5min\n"}]}),
    "units-dropins.ign": v("3.2.0", systemd={"units": [
        {"name": "ssh.service", "dropins": [{"name": "10-override.conf", "contents": "[Service]\nEnvironment=FOO=bar\n"},
                                            {"name": "20-empty.conf"}]},
        {"name": "app.service", "contents": UNIT, "dropins": [{"name": "env.conf", "contents": "[Service]\nEnvironment=A=1\n"}]}]}),
    "units-mask.ign": v("3.3.0",
        storage={"links": [{"path": "/etc/systemd/system/was-masked.service", "target": "/dev/null"}]},
        systemd={"units": [{"name": "apt-daily.timer", "mask": True},
                           {"name": "was-masked.service", "mask": False},
                           {"name": "never-masked.service", "mask": False}]}),
    "units-enabled.ign": v("3.3.0", systemd={"units": [
        {"name": "apt-daily.timer", "enabled": False},
        {"name": "e2scrub_reap.service", "enabled": False},
        {"name": "fstrim.timer", "enabled": True},
        {"name": "nonexistent.service", "enabled": False},
        {"name": "app.service", "enabled": True, "contents": UNIT}]}),
    "users-basic.ign": v("3.3.0", passwd={"users": [
        {"name": "core", "sshAuthorizedKeys": [KEY1, KEY2], "groups": ["sudo", "adm"], "shell": "/bin/bash", "gecos": "CoreOS Admin"}]}),
    "users-uid-home.ign": v("3.3.0", passwd={"users": [
        {"name": "app", "uid": 1500, "homeDir": "/srv/app", "sshAuthorizedKeys": [KEY1]},
        {"name": "svc", "uid": 1600, "system": True, "noCreateHome": True, "homeDir": "/var/lib/svc"},
        {"name": "sys2", "system": True},
        {"name": "nogroup1", "noUserGroup": True, "noLogInit": True},
        {"name": "next"}]}),
    "users-password.ign": v("3.3.0", passwd={"users": [
        {"name": "core", "passwordHash": "$6$rounds=4096$salt$hash"},
        {"name": "root", "passwordHash": "$y$j9T$abc$def", "sshAuthorizedKeys": [KEY1]},
        {"name": "emptyhash", "passwordHash": ""}]}),
    "users-existing-update.ign": v("3.3.0", passwd={"users": [
        # Only users whose home exists: Ignition 2.14 fails on the others (see provision's apply docs).
        {"name": "root", "shell": "/bin/sh", "gecos": "The Root", "groups": ["adm", "staff"]},
        {"name": "daemon", "uid": 1005, "shell": "/bin/bash", "primaryGroup": "staff"}]}),
    "groups-gid.ign": v("3.3.0", passwd={
        "groups": [{"name": "appgrp", "gid": 2000}, {"name": "sysgrp", "system": True}, {"name": "nextgrp"},
                   {"name": "pwgrp", "passwordHash": "$6$grouphash"}],
        "users": [{"name": "member", "primaryGroup": "appgrp", "groups": ["sysgrp", "2000"]},
                  {"name": "bygid", "primaryGroup": "100"}]}),
    "files-owner-names.ign": v("3.3.0",
        passwd={"users": [{"name": "core"}], "groups": [{"name": "appgrp", "gid": 2000}]},
        storage={"files": [{"path": "/home/core/owned.txt", "user": {"name": "core"}, "group": {"id": 2000}, "mode": 416,
                            "contents": {"source": plain("x")}},
                           {"path": "/etc/app/by-name", "user": {"name": "www-data"}, "group": {"name": "appgrp"}}],
                 "directories": [{"path": "/opt/owned", "user": {"name": "core"}, "group": {"name": "appgrp"}, "mode": 493}]}),
    "group-exists.fail.ign": v("3.3.0", passwd={"groups": [{"name": "sudo"}]}),
    "user-missing-group.fail.ign": v("3.3.0", passwd={"users": [{"name": "x", "groups": ["nosuchgroup"]}]}),
    "file-owner-missing.fail.ign": v("3.3.0", storage={"files": [{"path": "/etc/x", "user": {"name": "nosuchuser"}}]}),
    "symlink-parents.ign": v("3.3.0", storage={
        "files": [{"path": "/bin/via-bin-symlink", "mode": 493, "contents": {"source": plain("#!/bin/sh\necho hi\n")}},
                  {"path": "/lib/systemd/system/custom.service", "contents": {"source": plain(UNIT)}}],
        "directories": [{"path": "/sbin/dir-via-symlink"}]}),
    "empty-and-null.ign": v("3.3.0", storage={"files": [
        {"path": "/etc/app/empty-no-contents"},
        {"path": "/etc/app/empty-source", "contents": {"source": "data:,"}},
        {"path": "/etc/app/contents-object-empty", "contents": {}},
        {"path": "/etc/app/nulls", "mode": None, "user": None, "contents": {"source": plain("n\n"), "verification": None}}]}),
    "hash.ign": v("3.3.0", storage={"files": [
        {"path": "/etc/app/sha512", "contents": {"source": plain("verified\n"),
                                                 "verification": {"hash": "sha512-" + hashlib.sha512(b"verified\n").hexdigest()}}},
        {"path": "/etc/app/sha256-gz", "contents": {"source": gz("gz verified\n"), "compression": "gzip",
                                                    "verification": {"hash": "sha256-" + hashlib.sha256(b"gz verified\n").hexdigest()}}}]}),
    "hash-mismatch.fail.ign": v("3.3.0", storage={"files": [
        {"path": "/etc/app/bad", "contents": {"source": plain("tampered\n"),
                                              "verification": {"hash": "sha256-" + hashlib.sha256(b"original\n").hexdigest()}}}]}),
    "filesystems-ignored.ign": v("3.3.0", storage={
        "filesystems": [{"device": "/dev/disk/by-label/DATA", "format": "ext4", "path": "/var/lib/data", "label": "DATA",
                         "wipeFilesystem": False, "mountOptions": ["noatime"]}],
        "files": [{"path": "/var/lib/data/on-root.txt", "contents": {"source": plain("written into the root\n")}}]}),
    "unknown-keys.ign": {"ignition": {"version": "3.3.0", "extra": 1}, "storage": {"files": [
        {"path": "/etc/app/unknown", "contents": {"source": plain("u\n")}, "foo": "bar"}]}, "notasection": {}},
    "mixed-order.ign": v("3.3.0",
        passwd={"users": [{"name": "core", "sshAuthorizedKeys": [KEY1]}]},
        storage={"directories": [{"path": "/home/core/.config", "user": {"name": "core"}, "group": {"name": "core"}}],
                 "files": [{"path": "/home/core/.config/app/settings", "user": {"name": "core"}, "contents": {"source": plain("a=1\n")}},
                           {"path": "/a", "contents": {"source": plain("top\n")}}],
                 "links": [{"path": "/home/core/link-to-settings", "target": ".config/app/settings"}]},
        systemd={"units": [{"name": "app.service", "contents": UNIT, "enabled": True}, {"name": "cron.service", "enabled": False}]}),
}

SEED = {"ignition": {"version": "2.0.0"}, "storage": {"filesystems": [{"mount": {"device": "/dev/disk/by-label/ROOT", "format": "btrfs", "create": {"force": True, "options": ["--label=ROOT"]}}}], "files": [{"filesystem": "root", "path": "/etc/systemd/timesyncd.conf", "mode": 420, "contents": {"source": "data:,%5BTime%5D%0ANTP=0.ru.pool.ntp.org%201.ru.pool.ntp.org%0A"}}]}, "systemd": {"units": [{"name": "sshd.socket", "command": "restart", "runtime": True, "contents": "[Socket]\nListenStream=2345\nFreeBind=true\nAccept=yes"}]}, "networkd": {"units": [{"name": "iface-eth0.network", "contents": "[Match]\nName=eth0\n\n[Network]\nDNS=188.93.16.19\nDNS=188.93.17.19\nDNS=109.234.159.91\nAddress=10.11.12.13/24\nGateway=10.11.12.1"}]}}
NET = SEED["networkd"]["units"][0]["contents"]

v2 = {
    "seed.ign": (SEED, v("3.0.0",
        storage={"filesystems": [{"device": "/dev/disk/by-label/ROOT", "format": "btrfs", "wipeFilesystem": True, "options": ["--label=ROOT"]}],
                 "files": [{"path": "/etc/systemd/timesyncd.conf", "mode": 420, "overwrite": True,
                            "contents": {"source": SEED["storage"]["files"][0]["contents"]["source"]}},
                           {"path": "/etc/systemd/network/iface-eth0.network", "mode": 420, "overwrite": True,
                            "contents": {"source": plain(NET)}}]},
        systemd={"units": [{"name": "sshd.socket", "contents": SEED["systemd"]["units"][0]["contents"]}]})),
    "files-users.ign": (
        v("2.2.0",
          passwd={"users": [{"name": "core", "sshAuthorizedKeys": [KEY1], "create": {"groups": ["sudo"], "shell": "/bin/bash"}},
                            {"name": "ops", "uid": 1700, "groups": ["adm"], "passwordHash": "$6$x"}],
                  "groups": [{"name": "appgrp", "gid": 2000}]},
          storage={"files": [{"filesystem": "root", "path": "/etc/hostname", "contents": {"source": plain("v2host\n")}, "mode": 420},
                             {"filesystem": "root", "path": "/etc/motd", "append": True, "contents": {"source": plain("appended\n")}},
                             {"filesystem": "root", "path": "/home/core/note", "user": {"name": "core"}, "group": {"id": 2000},
                              "contents": {"source": b64("note\n")}}],
                   "directories": [{"filesystem": "root", "path": "/srv/v2", "mode": 488}],
                   "links": [{"filesystem": "root", "path": "/usr/local/bin/v2", "target": "/bin/true"}]},
          systemd={"units": [{"name": "app.service", "enable": True, "contents": UNIT},
                             {"name": "apt-daily.timer", "mask": True},
                             {"name": "fstrim.timer", "enabled": False}]},
          networkd={"units": [{"name": "10-dhcp.network", "contents": "[Match]\nName=e*\n[Network]\nDHCP=yes\n",
                               "dropins": [{"name": "mtu.conf", "contents": "[Link]\nMTUBytes=1400\n"}]}]}),
        v("3.0.0",
          passwd={"users": [{"name": "core", "sshAuthorizedKeys": [KEY1], "groups": ["sudo"], "shell": "/bin/bash"},
                            {"name": "ops", "uid": 1700, "groups": ["adm"], "passwordHash": "$6$x"}],
                  "groups": [{"name": "appgrp", "gid": 2000}]},
          storage={"files": [{"path": "/etc/hostname", "overwrite": True, "contents": {"source": plain("v2host\n")}, "mode": 420},
                             {"path": "/etc/motd", "overwrite": False, "append": [{"source": plain("appended\n")}]},
                             {"path": "/home/core/note", "overwrite": True, "user": {"name": "core"}, "group": {"id": 2000},
                              "contents": {"source": b64("note\n")}},
                             {"path": "/etc/systemd/network/10-dhcp.network", "mode": 420, "overwrite": True,
                              "contents": {"source": plain("[Match]\nName=e*\n[Network]\nDHCP=yes\n")}},
                             {"path": "/etc/systemd/network/10-dhcp.network.d/mtu.conf", "mode": 420, "overwrite": True,
                              "contents": {"source": plain("[Link]\nMTUBytes=1400\n")}}],
                   "directories": [{"path": "/srv/v2", "mode": 488}],
                   "links": [{"path": "/usr/local/bin/v2", "target": "/bin/true"}]},
          systemd={"units": [{"name": "app.service", "enabled": True, "contents": UNIT},
                             {"name": "apt-daily.timer", "mask": True},
                             {"name": "fstrim.timer", "enabled": False}]})),
}

invalid = {
    "bad-json.ign": '{"ignition": {"version": "3.3.0"},\n "storage": {"files": [}\n}',
    "cloud-config.ign": "#cloud-config\nhostname: x\n",
    "unknown-version.ign": v("3.5.0"),
    "no-version.ign": {"ignition": {}, "storage": {}},
    "relative-path.ign": v("3.3.0", storage={"files": [{"path": "etc/x"}]}),
    "dirty-path.ign": v("3.3.0", storage={"directories": [{"path": "/etc//x/"}]}),
    "bad-mode.ign": v("3.3.0", storage={"files": [{"path": "/etc/x", "mode": 8192}]}),
    "mode-string.ign": v("3.3.0", storage={"files": [{"path": "/etc/x", "mode": "0644"}]}),
    "duplicate-path.ign": v("3.3.0", storage={"files": [{"path": "/etc/x"}], "links": [{"path": "/etc/x", "target": "/y"}]}),
    "unit-extension.ign": v("3.3.0", systemd={"units": [{"name": "app.txt", "contents": "[Unit]\n"}]}),
    "dropin-extension.ign": v("3.3.0", systemd={"units": [{"name": "a.service", "dropins": [{"name": "x.ini", "contents": "[Unit]\n"}]}]}),
    "unit-content.ign": v("3.3.0", systemd={"units": [{"name": "a.service", "contents": "[Unit]\nDescription\n"}]}),
    "hash-malformed.ign": v("3.3.0", storage={"files": [{"path": "/x", "contents": {"source": "data:,x", "verification": {"hash": "md5-abc"}}}]}),
    "compression-xz.ign": v("3.3.0", storage={"files": [{"path": "/x", "contents": {"source": "data:,x", "compression": "xz"}}]}),
    "owner-both.ign": v("3.3.0", storage={"files": [{"path": "/x", "group": {"id": 1, "name": "adm"}}]}),
    "link-no-target.ign": v("3.3.0", storage={"links": [{"path": "/x"}]}),
    "overwrite-no-source.ign": v("3.3.0", storage={"files": [{"path": "/x", "overwrite": True}]}),
    "dataurl-percent.ign": v("3.3.0", storage={"files": [{"path": "/x", "contents": {"source": "data:,100%"}}]}),
    "dataurl-base64.ign": v("3.3.0", storage={"files": [{"path": "/x", "contents": {"source": "data:;base64,abc"}}]}),
    "fs-format.ign": v("3.3.0", storage={"filesystems": [{"device": "/dev/vdb", "format": "ntfs"}]}),
    "fs-label-long.ign": v("3.3.0", storage={"filesystems": [{"device": "/dev/vdb", "format": "ext4", "label": "a-label-that-is-too-long"}]}),
    "user-duplicate.ign": v("3.3.0", passwd={"users": [{"name": "a"}, {"name": "a"}]}),
    "ssh-key-duplicate.ign": v("3.3.0", passwd={"users": [{"name": "a", "sshAuthorizedKeys": [KEY1, KEY1]}]}),
    "file-under-link.ign": v("3.3.0", storage={"links": [{"path": "/l", "target": "/t"}], "files": [{"path": "/l/f"}]}),
    "scheme.ign": v("3.3.0", storage={"files": [{"path": "/x", "contents": {"source": "ftp://example.com/x"}}]}),
    "top-not-object.ign": [1, 2],
    "files-not-list.ign": v("3.3.0", storage={"files": {"path": "/x"}}),
}


def write(path, obj):
    with open(path, "w") as f:
        if isinstance(obj, str):
            f.write(obj)
        else:
            json.dump(obj, f, indent=1)
            f.write("\n")


for name, obj in valid.items():
    write(os.path.join(HERE, name), obj)
for name, (old, new) in v2.items():
    write(os.path.join(HERE, "v2", name), old)
    write(os.path.join(HERE, "v2", name.replace(".ign", ".v3.ign")), new)
for name, obj in invalid.items():
    write(os.path.join(HERE, "invalid", name), obj)
print(f"{len(valid)} valid, {len(v2)} v2 pairs, {len(invalid)} invalid")
