#!/bin/sh
# The app's own MinIO user, limited to the `curated` bucket (the warehouse): the root keys never leave
# MinIO and this step.  Idempotent: run again, it changes nothing.
set -eu
mc alias set local http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null
mc mb --ignore-existing local/curated
cat > /tmp/curate-app.json <<'POLICY'
{
  "Version": "2012-10-17",
  "Statement": [
    {"Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetBucketLocation"], "Resource": ["arn:aws:s3:::curated"]},
    {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload",
                                   "s3:ListMultipartUploadParts"], "Resource": ["arn:aws:s3:::curated/*"]}
  ]
}
POLICY
mc admin user add local curate-app "$APP_S3_SECRET_KEY"
mc admin policy create local curate-app /tmp/curate-app.json
mc admin policy attach local curate-app --user curate-app || true  # already attached on a second run
