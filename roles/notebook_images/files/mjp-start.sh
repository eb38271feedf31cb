#!/bin/bash
# Start script of the LTI-container notebook images (managed by Ansible, role
# notebook_images). The container starts as root; this script sets the Moodle user up
# from the environment the hub's LTIContainerSpawner passes (NB_*, LTI_*, ...), links
# the course volumes into the work tree, then drops to the user and execs
# jupyterhub-singleuser with the spawner's arguments.
set -euo pipefail

log() { echo "mjp-start: $*" >&2; }
die() { log "$*"; exit 1; }

[ "$(id -u)" = 0 ] || die "must start as root (the spawner sets user=root)"
STARTED=$(date +%s)  # NB_ACTLIMIT counts from here

NB_USER=${NB_USER:?NB_USER is not set}
NB_UID=${NB_UID:?NB_UID is not set}
NB_GID=${NB_GID:?NB_GID is not set}
NB_GROUP=${NB_GROUP:-others}
NB_DIR=${NB_DIR:-/home/$NB_GROUP/$NB_USER}
PRJCT_DIR=${PRJCT_DIR:-jupyter}
WORK_DIR=${WORK_DIR:-works}
VOLUME_DIR=${VOLUME_DIR:-.volumes}
NB_WRKDIR=${NB_WRKDIR:-$NB_DIR/$PRJCT_DIR/$WORK_DIR}
NB_THRGID=${NB_THRGID:-7000}
NB_THRGROUP=${NB_THRGROUP:-TEACHER}
NB_TEACHER=${NB_TEACHER:-}
NB_UMASK=${NB_UMASK:-0027}
NB_ACTLIMIT=${NB_ACTLIMIT:-0}
GRANT_SUDO=${GRANT_SUDO:-no}
CONDA_DIR=${CONDA_DIR:-/opt/conda}

# The hub validated all of this already; check again, the container trusts no one.
[[ $NB_USER =~ ^[a-z0-9_][a-z0-9_.@-]{0,63}$ && $NB_USER != *..* ]] || die "bad NB_USER"
[[ $NB_GROUP =~ ^[A-Za-z_][A-Za-z0-9_.-]{0,31}$ ]] || die "bad NB_GROUP"
[[ $NB_THRGROUP =~ ^[A-Za-z_][A-Za-z0-9_.-]{0,31}$ ]] || die "bad NB_THRGROUP"
for n in "$NB_UID" "$NB_GID" "$NB_THRGID" "$NB_ACTLIMIT"; do
  [[ $n =~ ^[0-9]{1,10}$ ]] || die "bad number '$n'"
done
[ "$NB_UID" -ge 1000 ] || die "NB_UID below 1000"
[[ $NB_UMASK =~ ^0?[0-7]{3}$ ]] || die "bad NB_UMASK"
[[ $VOLUME_DIR =~ ^[A-Za-z0-9_.-]+$ && $VOLUME_DIR != . && $VOLUME_DIR != .. ]] || die "bad VOLUME_DIR"
case "$NB_DIR/" in /*/../* | /*/./*) die "bad NB_DIR" ;; /*) ;; *) die "bad NB_DIR" ;; esac
case "$NB_WRKDIR/" in "$NB_DIR"/*/../* | "$NB_DIR"/*/./*) die "bad NB_WRKDIR" ;; "$NB_DIR"/*) ;; *) die "bad NB_WRKDIR" ;; esac
is_teacher=no
[ -n "$NB_TEACHER" ] && [ "$NB_TEACHER" = "$NB_USER" ] && is_teacher=yes

# ---- groups and user ---------------------------------------------------------------
ensure_group() {  # name gid -> prints the name the gid has in the container
  local name=$1 gid=$2 existing
  existing=$(getent group "$gid" | cut -d: -f1 || true)
  if [ -n "$existing" ]; then
    echo "$existing"
  elif getent group "$name" >/dev/null; then
    groupmod -g "$gid" "$name" && echo "$name"
  else
    groupadd -g "$gid" "$name" && echo "$name"
  fi
}
group_name=$(ensure_group "$NB_GROUP" "$NB_GID")
teacher_group=$(ensure_group "$NB_THRGROUP" "$NB_THRGID")

existing_user=$(getent passwd "$NB_UID" | cut -d: -f1 || true)
if [ -n "$existing_user" ] && [ "$existing_user" != "$NB_USER" ]; then
  usermod -l "$NB_USER" -d "$NB_DIR" -g "$NB_GID" "$existing_user"  # e.g. the image's jovyan
elif getent passwd "$NB_USER" >/dev/null; then
  usermod -u "$NB_UID" -g "$NB_GID" -d "$NB_DIR" "$NB_USER"
else
  useradd -M -N -u "$NB_UID" -g "$NB_GID" -d "$NB_DIR" -s /bin/bash "$NB_USER"
fi
if [ "$is_teacher" = yes ]; then
  usermod -a -G "$teacher_group" "$NB_USER"
fi

# sudo only when the operator allowed it for teachers (GRANT_SUDO=yes); never otherwise.
rm -f /etc/sudoers.d/mjp-notebook-user
if [ "$GRANT_SUDO" = yes ] && [ -d /etc/sudoers.d ]; then
  echo "$NB_USER ALL=(ALL) NOPASSWD:ALL" > /etc/sudoers.d/mjp-notebook-user
  chmod 0440 /etc/sudoers.d/mjp-notebook-user
fi

as_user() { setpriv --reuid="$NB_UID" --regid="$NB_GID" --init-groups -- "$@"; }

# ---- home and work tree ------------------------------------------------------------
mkdir -p "$NB_DIR"
if [ "$(stat -c %u "$NB_DIR")" = 0 ]; then
  chown "$NB_UID:$NB_GID" "$NB_DIR"
  chmod 0700 "$NB_DIR"
fi
for dir in "$NB_DIR/$PRJCT_DIR" "$NB_WRKDIR" "$NB_WRKDIR/$VOLUME_DIR"; do
  [ -d "$dir" ] || as_user mkdir -p "$dir"
  [ "$(stat -c %u "$dir")" = 0 ] && chown "$NB_UID:$NB_GID" "$dir"
done

# ---- volumes: ".volumes/<volume>:<AccessName>" entries ------------------------------
# ltihub.nbstart (our package, in the image): as root, task volumes teacher-writable
# (recursively, set-group-id directories, group TEACHER) and submission volumes 3777 with
# .ipynb_checkpoints made up front; then as the user, personal volumes refreshed from the
# task volume without overwriting, a link per volume, stale links under works/ removed.
PYTHON="$CONDA_DIR/bin/python3"
export NB_DIR NB_WRKDIR VOLUME_DIR NB_THRGID
"$PYTHON" -I -m ltihub.nbstart root || log "some volumes could not be prepared"
(umask "$NB_UMASK" && as_user "$PYTHON" -I -m ltihub.nbstart user) || log "volume links failed"

# ---- drop privileges and start ---------------------------------------------------------
umask "$NB_UMASK"
export HOME="$NB_DIR" USER="$NB_USER" LOGNAME="$NB_USER" SHELL=/bin/bash
export PATH="$CONDA_DIR/bin:$PATH"
cd "$NB_DIR"
drop=(setpriv --reuid="$NB_UID" --regid="$NB_GID" --init-groups)
if [ "$GRANT_SUDO" != yes ]; then
  drop+=(--inh-caps=-all --bounding-set=-all)
fi
# Time and memory warnings shown by Jnotice; the watcher ends when this process (the
# server, after exec) is gone.
"${drop[@]}" -- "$PYTHON" -I -m ltihub.nbnotice --parent "$$" --started "$STARTED" &
if [ "$NB_ACTLIMIT" -gt 0 ]; then  # the activity's time limit: stop the server after it
  exec timeout --kill-after=30 "$NB_ACTLIMIT" "${drop[@]}" -- jupyterhub-singleuser "$@"
fi
exec "${drop[@]}" -- jupyterhub-singleuser "$@"
