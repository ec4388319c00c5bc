-- A JSON export of BTCPay Server's API keys, users and store roles, for
-- `gateway import btcpay export.json` when Keygate cannot reach BTCPay's database itself:
--
--   psql "postgresql://...btcpay..." --no-align --tuples-only -f deploy/btcpay-export.sql > export.json
--
-- BTCPay 1.10 or later (store roles). Read-only. The export holds the keys themselves: keep it private and delete it after the
-- import. Keys whose permissions are still in BTCPay's older `Blob` column (not `Blob2`) are
-- exported with "permissions": "old-blob" and reported as skipped; import those with the
-- database URL instead, which reads both columns.
SELECT json_build_object(
    'format', 'btcpay-export',
    'version', 1,
    'users', (
        SELECT coalesce(json_agg(json_build_object(
            'id', u."Id",
            'email', u."Email",
            'admin', EXISTS (
                SELECT 1 FROM "AspNetUserRoles" ur JOIN "AspNetRoles" r ON r."Id" = ur."RoleId"
                WHERE ur."UserId" = u."Id" AND r."Name" = 'ServerAdmin'),
            'disabled', coalesce(u."LockoutEnd" > '9000-01-01', false)
        ) ORDER BY u."Id"), '[]')
        FROM "AspNetUsers" u),
    'stores', (
        SELECT coalesce(json_agg(json_build_object('id', s."Id", 'name', s."StoreName")
            ORDER BY s."Id"), '[]')
        FROM "Stores" s),
    'storeUsers', (
        SELECT coalesce(json_agg(json_build_object(
            'userId', us."ApplicationUserId",
            'storeId', us."StoreDataId",
            'role', coalesce(sr."Role", us."Role"),
            'permissions', sr."Permissions"
        ) ORDER BY us."ApplicationUserId", us."StoreDataId"), '[]')
        FROM "UserStore" us LEFT JOIN "StoreRoles" sr ON sr."Id" = us."Role"),
    'apiKeys', (
        SELECT coalesce(json_agg(json_build_object(
            'key', k."Id",
            'userId', k."UserId",
            'label', k."Label",
            'permissions', CASE
                WHEN k."Blob2" IS NOT NULL THEN coalesce(k."Blob2" -> 'permissions', '[]'::jsonb)
                WHEN k."Blob" IS NOT NULL THEN to_jsonb('old-blob'::text)
                ELSE '[]'::jsonb END,
            'applicationIdentifier', k."Blob2" ->> 'applicationIdentifier',
            'applicationAuthority', k."Blob2" ->> 'applicationAuthority'
        ) ORDER BY k."UserId", k."Label", k."Id"), '[]')
        FROM "ApiKeys" k WHERE k."Type" = 1)
);
