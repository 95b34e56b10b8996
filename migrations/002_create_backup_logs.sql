-- One row per backup: what Wayback stored, where, and what became of it (docs/schema.md).
CREATE TABLE IF NOT EXISTS backup_logs (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  backup_id VARCHAR(255) NOT NULL UNIQUE,
  backup_type VARCHAR(50) NOT NULL,
  backup_timestamp TIMESTAMP NOT NULL,
  backup_size_bytes BIGINT,
  checksum_md5 VARCHAR(32),
  checksum_sha256 VARCHAR(64),
  location_local VARCHAR(512),
  location_s3 VARCHAR(512),
  status VARCHAR(50) NOT NULL,
  recovery_tested BOOLEAN DEFAULT FALSE,
  test_timestamp TIMESTAMP,
  recovery_time_seconds INTEGER,
  created_at TIMESTAMP DEFAULT NOW(),
  verified_at TIMESTAMP,
  purged_at TIMESTAMP,
  error_message TEXT
);
CREATE INDEX IF NOT EXISTS idx_backup_logs_timestamp ON backup_logs(backup_timestamp DESC);
CREATE INDEX IF NOT EXISTS idx_backup_logs_status ON backup_logs(status);
CREATE INDEX IF NOT EXISTS idx_backup_logs_type ON backup_logs(backup_type);
