#!/bin/sh
# Dovecot's auth process runs as the user dovecot and reads the passwd-files
# whenever they change; compose's secrets are bind mounts with the host
# file's owner and mode. Copies owned by root:dovecot, 0640, are readable
# whatever the host side says.
set -eu
install -m 0640 -o root -g dovecot /run/secrets/dovecot_users /etc/dovecot/users
install -m 0640 -o root -g dovecot /run/secrets/dovecot_master_users /etc/dovecot/master-users
exec dovecot -F
