#!/bin/bash
# oracle.sh USER_DATA TEMPLATE OUTDIR
#
# Runs this machine's real cloud-init (Debian 22.4) on USER_DATA, as the
# OpenStack config drive would hand it over, against TEMPLATE: a directory
# holding the image's account files (etc/{passwd,group,shadow,gshadow,
# login.defs,default/useradd,skel,...}) and home/. Needs root, unshare and
# overlayfs.
#
# How: a private mount/UTS/network namespace; an overlayfs whose lower
# layers are TEMPLATE over the host's / (so cloud-init and Python come from
# the host, the accounts from the template); chroot into it and run the
# four cloud-init stages with the ConfigDrive datasource reading a seed
# directory. OUTDIR receives the overlay's upper layer: exactly what
# cloud-init wrote (a deleted file is a 0/0 character device there).
# Adapted from shared/research/oracle/ci-oracle.sh.
set -eu
ud=$(realpath "$1"); tmpl=$(realpath "$2"); out=$(realpath -m "$3")
rm -rf "$out"; mkdir -p "$out"
S=$(mktemp -d /tmp/cc-oracle.XXXXXX)
# Removed on any exit: a failed mount must not leave the folder behind.
trap 'rm -rf "$S" "$S.cfg" "$S.meta"' EXIT
cat > "$S.cfg" <<'CFG'
datasource_list: [ ConfigDrive ]
cloud_init_modules: [write-files, set_hostname, update_hostname, update_etc_hosts, users-groups, ssh]
cloud_config_modules: [runcmd]
cloud_final_modules: [write-files-deferred, scripts-user]
ssh_deletekeys: false
ssh_genkeytypes: []
disable_root: false
system_info:
  default_user:
    name: core
    lock_passwd: false
CFG
printf '{"uuid": "c0ffee00-0000-4000-8000-000000000001", "name": "oracle"}\n' > "$S.meta"
unshare -m -u -n --fork bash -es <<INNER
mount --make-rprivate /
mount -t tmpfs tmpfs $S; mkdir -p $S/u $S/w $S/m $S/t
# The template is copied onto the tmpfs: a lower layer inside another
# (the host's /) is refused by overlayfs as overlapping.
cp -a $tmpl/. $S/t/
mount -t overlay overlay -o lowerdir=$S/t:/,upperdir=$S/u,workdir=$S/w $S/m
M=$S/m
mount -t proc proc \$M/proc; mount --rbind /sys \$M/sys; mount --rbind /dev \$M/dev; mount -t tmpfs tmpfs \$M/run
rm -rf \$M/var/lib/cloud \$M/var/log/cloud-init*.log
mkdir -p \$M/var/lib/cloud/seed/config_drive/openstack/latest
cp "$ud" \$M/var/lib/cloud/seed/config_drive/openstack/latest/user_data
cp "$S.meta" \$M/var/lib/cloud/seed/config_drive/openstack/latest/meta_data.json
cp "$S.cfg" \$M/etc/cloud/cloud.cfg.d/90-oracle.cfg
hostname localhost
for st in "init --local" "init" "modules --mode=config" "modules --mode=final"; do
  chroot \$M cloud-init \$st > $S/log.\${st// /_} 2>&1 || echo "cloud-init \$st: rc=\$?" >&2
done
cp \$M/var/log/cloud-init.log "$out.cloud-init.log" 2>/dev/null || true
cp -a $S/u/. "$out/"
umount -l $S
INNER
rm -rf "$S" "$S.cfg" "$S.meta"
