#!/bin/sh
# Make a hardened Mosquitto broker for the kexlab lab in one folder, without root:
# a CA, a broker certificate signed by it, two accounts with random passwords, the ACL,
# and hardened.conf pointing at all of them (plain MQTT and TLS, both on loopback).
#
#   oob/mosquitto/make-lab-broker.sh /tmp/broker            # then:
#   mosquitto -c /tmp/broker/hardened.conf
#
# The commands are the ones oob/mosquitto/README.md explains; this runs them in order.
# Needs openssl and mosquitto_passwd (Debian: apt install mosquitto openssl).
set -eu

dir=${1:?usage: $0 FOLDER [HOSTNAME]   (HOSTNAME: a name clients use besides localhost)}
name=${2:-}
here=$(cd "$(dirname "$0")" && pwd)
passwd_tool=$(command -v mosquitto_passwd || echo /usr/bin/mosquitto_passwd)
mosquitto_bin=$(command -v mosquitto || echo /usr/sbin/mosquitto)

umask 077                       # every file below is readable by you alone
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
cd "$dir"

# 1. A certificate authority of the lab: its key signs the broker's certificate; clients
#    trust the broker because they trust ca.crt (--mqtt-ca ca.crt).
openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -keyout ca.key -out ca.crt -days 30 -subj "/CN=kexlab lab CA" 2>/dev/null

# 2. The broker's key and certificate, for the names clients connect to.
san="DNS:localhost,IP:127.0.0.1,IP:::1"
[ -n "$name" ] && san="$san,DNS:$name"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -keyout broker.key -out broker.csr -subj "/CN=${name:-localhost}" 2>/dev/null
printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\n' "$san" > broker.ext
openssl x509 -req -in broker.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
  -out broker.crt -days 30 -extfile broker.ext 2>/dev/null
rm -f broker.csr broker.ext ca.srl

# 3. Two accounts, with random passwords in files (never on a command line you type).
for user in kexlab-server kexlab-client; do
  openssl rand -hex 16 > "$user.password"
done
rm -f passwd
"$passwd_tool" -b -c passwd kexlab-server "$(cat kexlab-server.password)"
"$passwd_tool" -b passwd kexlab-client "$(cat kexlab-client.password)"

# 4. The ACL, and a config that points at this folder.
cp "$here/kexlab.acl" kexlab.acl
sed -e "s|/etc/mosquitto/kexlab|$dir|g" \
    -e 's|^# listener 8883|listener 8883|' \
    -e 's|^# certfile|certfile|' -e 's|^# keyfile|keyfile|' \
    -e "s|mosquitto -c oob/mosquitto/hardened.conf|mosquitto -c $dir/hardened.conf|" \
    "$here/hardened.conf" > hardened.conf
# Mosquitto started as root switches to the user "mosquitto", who cannot read this
# folder: it runs as you instead.
printf '\n# Made by make-lab-broker.sh: run as the folder'"'"'s owner.\nuser %s\n' "$(id -un)" >> hardened.conf

cat <<EOF
made in $dir:
  ca.crt                 the lab CA (clients: --mqtt-ca $dir/ca.crt)
  broker.crt broker.key  the broker's certificate ($san) and key
  passwd kexlab.acl      the accounts and what each may read and write
  kexlab-server.password kexlab-client.password
  hardened.conf          plain MQTT on 127.0.0.1:1883, TLS on 127.0.0.1:8883
start it:   $mosquitto_bin -c $dir/hardened.conf
the server: kexlab server --oob mqtts://localhost:8883 --mqtt-ca $dir/ca.crt \\
              --mqtt-username kexlab-server --mqtt-password-file $dir/kexlab-server.password
a client:   kexlab client 127.0.0.1 --kex psk --oob mqtts://localhost:8883 --mqtt-ca $dir/ca.crt \\
              --mqtt-username kexlab-client --mqtt-password-file $dir/kexlab-client.password
EOF
