#!/bin/bash
# The secured Kafka of compose.yaml, in the apache/kafka image: the same shape
# as the local one (broker/localkafka/secure.py, which the tests run).
#
# 1. Every KAFKA_* variable of the service becomes a broker property
#    (KAFKA_LISTENER_SECURITY_PROTOCOL_MAP -> listener.security.protocol.map).
# 2. The listeners' JAAS entries (SASL_SSL and CONTROLLER, both as admin)
#    are added with admin's password, read from its secret.
# 3. The storage is formatted once, with the SCRAM-SHA-512 users admin, web,
#    worker and operator (KIP-900), their passwords from the secrets; later
#    starts keep the users they have.
# 4. /tmp/admin.properties lets the healthcheck and CLI tools log in as admin.
set -euo pipefail

# (Overridable for the test that runs this script outside the image.)
SECRETS=${WILLOWE_SECRETS:-/run/secrets}
KAFKA_BIN=${WILLOWE_KAFKA_BIN:-/opt/kafka/bin}
CONFIG_DIR=${WILLOWE_CONFIG_DIR:-/tmp}
CONFIG=$CONFIG_DIR/server.properties
USERS=(admin web worker operator)

secret() { tr -d '\r\n' < "$SECRETS/$1"; }

admin_password=$(secret kafka_admin_password)
jaas="org.apache.kafka.common.security.scram.ScramLoginModule required username=\"admin\" password=\"${admin_password}\";"

umask 077
: > "$CONFIG"
while IFS='=' read -r name value; do
  case "$name" in
    KAFKA_HOME|KAFKA_VERSION|KAFKA_URL|KAFKA_DEBUG|KAFKA_*_OPTS|KAFKA_OPTS) continue ;;
  esac
  key=$(echo "${name#KAFKA_}" | tr '[:upper:]' '[:lower:]' | sed -e 's/__/\x00/g' -e 's/_/./g' -e 's/\x00/_/g')
  echo "${key}=${value}" >> "$CONFIG"
done < <(env | grep '^KAFKA_' | sort)
{
  echo "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=${jaas}"
  echo "listener.name.controller.scram-sha-512.sasl.jaas.config=${jaas}"
} >> "$CONFIG"

scram=()
for user in "${USERS[@]}"; do
  scram+=(--add-scram "SCRAM-SHA-512=[name=${user},password=$(secret "kafka_${user}_password")]")
done
"$KAFKA_BIN/kafka-storage.sh" format --ignore-formatted -t "${CLUSTER_ID}" -c "$CONFIG" \
  "${scram[@]}"

cat > "$CONFIG_DIR/admin.properties" <<PROPERTIES
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=${jaas}
ssl.truststore.type=PEM
ssl.truststore.location=${SECRETS}/kafka_ca
PROPERTIES

exec "$KAFKA_BIN/kafka-server-start.sh" "$CONFIG"
