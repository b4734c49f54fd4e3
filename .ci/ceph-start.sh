#!/usr/bin/env bash
# Start a one-node Ceph cluster on 127.0.0.1 for the object-storage tests: one monitor,
# one OSD (bluestore on a sparse file, 4 GiB unless CEPH_OSD_BYTES says otherwise) and
# one RADOS gateway (S3 on port 7480),
# from Debian's packages (ceph-mon ceph-osd radosgw ceph-common). Creates user
# AKTEST/SKTEST and bucket `arrays`. Usage: CEPH_DIR=/tmp/ceph .ci/ceph-start.sh
# Prints the environment the tests need (source it: eval "$(.ci/ceph-start.sh)").
# The daemons' pid files are in $CEPH_DIR/run; .ci/ceph-stop.sh stops them by PID.
set -euo pipefail
D=${CEPH_DIR:-/tmp/wdb-ceph}
PORT=${CEPH_RGW_PORT:-7480}
OSD_BYTES=${CEPH_OSD_BYTES:-4294967296}
if [ -e "$D/run/client.rgw.a.pid" ] && kill -0 "$(cat "$D/run/client.rgw.a.pid")" 2>/dev/null; then
  echo "ceph-start: a cluster is already running in $D" >&2
else
  rm -rf "$D"; mkdir -p "$D"/{run,log,mon,osd,rgw}
  FSID=$(cat /proc/sys/kernel/random/uuid)
  cat > "$D/ceph.conf" <<CONF
[global]
fsid = $FSID
mon_host = v2:127.0.0.1:3300
auth_cluster_required = none
auth_service_required = none
auth_client_required = none
ms_mon_client_mode = crc
ms_client_mode = crc
ms_bind_ipv6 = false
public_addr = 127.0.0.1
osd_pool_default_size = 1
osd_pool_default_min_size = 1
mon_allow_pool_size_one = true
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_pool_default_pg_autoscale_mode = off
mon_max_pg_per_osd = 1000
osd_crush_chooseleaf_type = 0
mon_warn_on_pool_no_redundancy = false
run_dir = $D/run
admin_socket = $D/run/\$name.asok
log_file = $D/log/\$name.log
pid_file = $D/run/\$name.pid
keyring = $D/keyring
[mon]
mon_data = $D/mon/\$cluster-\$id
mon_data_avail_crit = 1
[osd]
osd_data = $D/osd/\$cluster-\$id
osd_objectstore = bluestore
bluestore_block_path = $D/osd/\$cluster-\$id/block.file
bluestore_block_create = true
bluestore_block_size = $OSD_BYTES
osd_memory_target = 939524096
[client.rgw.a]
rgw_frontends = beast endpoint=127.0.0.1:$PORT tcp_nodelay=1
rgw_data = $D/rgw
CONF
  C="-c $D/ceph.conf"
  ceph-authtool --create-keyring "$D/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
  monmaptool --create --addv a '[v2:127.0.0.1:3300]' --fsid "$FSID" "$D/monmap" >/dev/null
  ceph-mon $C --mkfs -i a --monmap "$D/monmap" --keyring "$D/keyring"
  ceph-mon $C -i a
  U=$(cat /proc/sys/kernel/random/uuid); ID=$(timeout 60 ceph $C osd new "$U")
  mkdir -p "$D/osd/ceph-$ID"
  ceph-osd $C -i "$ID" --mkfs --osd-uuid "$U" 2>/dev/null
  ceph-osd $C -i "$ID" 2>/dev/null
  radosgw $C -n client.rgw.a
  for _ in $(seq 1 90); do curl -fs -o /dev/null "http://127.0.0.1:$PORT/" && break; sleep 1; done
  curl -fs -o /dev/null "http://127.0.0.1:$PORT/" || { echo "ceph-start: the gateway did not answer" >&2; exit 1; }
  timeout 120 radosgw-admin $C user create --uid=ci --display-name=ci \
    --access-key=AKTEST --secret=SKTEST >/dev/null
  for _ in $(seq 1 30); do
    curl -fs --aws-sigv4 aws:amz:us-east-1:s3 --user AKTEST:SKTEST \
      -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' -X PUT "http://127.0.0.1:$PORT/arrays" && break
    sleep 1
  done
fi
cat <<ENV
export AWS_ENDPOINT=http://127.0.0.1:$PORT
export AWS_ACCESS_KEY_ID=AKTEST
export AWS_SECRET_ACCESS_KEY=SKTEST
export AWS_REGION=us-east-1
export AWS_ALLOW_HTTP=true
export WDB_S3_TEST_URL=s3://arrays
export WDB_CEPH_DIR=$D
ENV
