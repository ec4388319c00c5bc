"""A PostgreSQL database laid out like BTCPay Server's, for the importer's tests.

Tables, columns and types are those of BTCPay's EF Core model snapshot
(`BTCPayServer.Data/Migrations/ApplicationDbContextModelSnapshot.cs`), restricted to what the
importer reads plus a few neighbours, with BTCPay's seeded store roles and its blob formats:
`Blob2` JSONB (camelCase, as `IHasBlobExtensions` writes it) and the older `Blob` bytea, UTF-8
JSON or gzipped.
"""

from __future__ import annotations

import gzip
import json
from typing import Any

import asyncpg

SCHEMA = """
CREATE TABLE "AspNetUsers" (
    "Id" text PRIMARY KEY,
    "AccessFailedCount" integer NOT NULL DEFAULT 0,
    "Approved" boolean NOT NULL DEFAULT true,
    "Blob" bytea,
    "Blob2" JSONB,
    "ConcurrencyStamp" text,
    "Created" timestamp with time zone,
    "Email" character varying(256),
    "EmailConfirmed" boolean NOT NULL DEFAULT true,
    "LockoutEnabled" boolean NOT NULL DEFAULT true,
    "LockoutEnd" timestamp with time zone,
    "NormalizedEmail" character varying(256),
    "NormalizedUserName" character varying(256),
    "PasswordHash" text,
    "PhoneNumber" text,
    "PhoneNumberConfirmed" boolean NOT NULL DEFAULT false,
    "RequiresApproval" boolean NOT NULL DEFAULT false,
    "RequiresEmailConfirmation" boolean NOT NULL DEFAULT false,
    "SecurityStamp" text,
    "TwoFactorEnabled" boolean NOT NULL DEFAULT false,
    "UserName" character varying(256)
);
CREATE TABLE "AspNetRoles" (
    "Id" text PRIMARY KEY,
    "ConcurrencyStamp" text,
    "Name" character varying(256),
    "NormalizedName" character varying(256)
);
CREATE TABLE "AspNetUserRoles" (
    "UserId" text NOT NULL REFERENCES "AspNetUsers" ("Id") ON DELETE CASCADE,
    "RoleId" text NOT NULL REFERENCES "AspNetRoles" ("Id") ON DELETE CASCADE,
    PRIMARY KEY ("UserId", "RoleId")
);
CREATE TABLE "Stores" (
    "Id" text PRIMARY KEY,
    "Archived" boolean NOT NULL DEFAULT false,
    "DefaultCrypto" text,
    "DerivationStrategies" JSONB,
    "DerivationStrategy" text,
    "SpeedPolicy" integer NOT NULL DEFAULT 0,
    "StoreBlob" JSONB,
    "StoreCertificate" bytea,
    "StoreName" text,
    "StoreWebsite" text
);
CREATE TABLE "StoreRoles" (
    "Id" text PRIMARY KEY,
    "Permissions" text[] NOT NULL,
    "Role" text NOT NULL,
    "StoreDataId" text REFERENCES "Stores" ("Id") ON DELETE CASCADE
);
CREATE UNIQUE INDEX "IX_StoreRoles_StoreDataId_Role" ON "StoreRoles" ("StoreDataId", "Role");
CREATE TABLE "UserStore" (
    "ApplicationUserId" text NOT NULL REFERENCES "AspNetUsers" ("Id") ON DELETE CASCADE,
    "StoreDataId" text NOT NULL REFERENCES "Stores" ("Id") ON DELETE CASCADE,
    "Role" text REFERENCES "StoreRoles" ("Id"),
    PRIMARY KEY ("ApplicationUserId", "StoreDataId")
);
CREATE TABLE "ApiKeys" (
    "Id" character varying(50) PRIMARY KEY,
    "Blob" bytea,
    "Blob2" JSONB,
    "Label" text,
    "StoreId" character varying(50) REFERENCES "Stores" ("Id") ON DELETE CASCADE,
    "Type" integer NOT NULL,
    "UserId" character varying(50) REFERENCES "AspNetUsers" ("Id") ON DELETE CASCADE
);
CREATE INDEX "IX_ApiKeys_StoreId" ON "ApiKeys" ("StoreId");
CREATE INDEX "IX_ApiKeys_UserId" ON "ApiKeys" ("UserId");
INSERT INTO "AspNetRoles" ("Id", "Name", "NormalizedName")
    VALUES ('r-admin', 'ServerAdmin', 'SERVERADMIN');
INSERT INTO "StoreRoles" ("Id", "Role", "Permissions") VALUES
    ('Owner', 'Owner', ARRAY['btcpay.store.canmodifystoresettings']),
    ('Manager', 'Manager', ARRAY['btcpay.store.canviewstoresettings',
        'btcpay.store.canmodifyinvoices', 'btcpay.store.webhooks.canmodifywebhooks',
        'btcpay.store.canmodifypaymentrequests', 'btcpay.store.canmanagepullpayments',
        'btcpay.store.canmanagepayouts']),
    ('Employee', 'Employee', ARRAY['btcpay.store.canmodifyinvoices',
        'btcpay.store.canmodifypaymentrequests', 'btcpay.store.cancreatenonapprovedpullpayments',
        'btcpay.store.canviewpayouts', 'btcpay.store.canviewpullpayments']),
    ('Guest', 'Guest', ARRAY['btcpay.store.canmodifyinvoices',
        'btcpay.store.canviewpaymentrequests', 'btcpay.store.canviewpullpayments',
        'btcpay.store.canviewpayouts']);
"""

PERMANENT, LEGACY = 1, 0  # APIKeyType


def blob2(permissions: list[str], **more: Any) -> str:
    """An `APIKeyBlob` as BTCPay writes `Blob2` (camelCase JSON)."""
    return json.dumps(
        {
            "permissions": permissions,
            "applicationIdentifier": more.get("app"),
            "applicationAuthority": more.get("authority"),
        }
    )


def old_blob(permissions: list[str], *, zipped: bool) -> bytes:
    """An `APIKeyBlob` in the older `Blob` column: UTF-8 JSON, or gzipped (BTCPay's ZipUtils).
    Old blobs were written with the property names as declared (PascalCase)."""
    raw = json.dumps({"Permissions": permissions}).encode()
    return gzip.compress(raw) if zipped else raw


class BTCPayDatabase:
    """Rows in a BTCPay-shaped database."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    async def user(
        self, uid: str, email: str | None, *, admin: bool = False, disabled: bool = False
    ) -> None:
        """A user; `disabled` as BTCPay disables one: locked out until DateTimeOffset.MaxValue."""
        await self.conn.execute(
            'INSERT INTO "AspNetUsers" ("Id", "Email", "NormalizedEmail", "UserName", '
            '"PasswordHash", "LockoutEnd") VALUES ($1, $2::text, upper($2::text), $2::text, $3, '
            "CASE WHEN $4 THEN '9999-12-31 23:59:59.9999999+00'::timestamptz END)",
            uid,
            email,
            "AQAAAAEAACcQAAAAE-not-portable",
            disabled,
        )
        if admin:
            await self.conn.execute(
                'INSERT INTO "AspNetUserRoles" ("UserId", "RoleId") VALUES ($1, $2)', uid, "r-admin"
            )

    async def store(self, sid: str, name: str) -> None:
        await self.conn.execute(
            'INSERT INTO "Stores" ("Id", "StoreName") VALUES ($1, $2)', sid, name
        )

    async def role(self, rid: str, store: str, name: str, permissions: list[str]) -> None:
        await self.conn.execute(
            'INSERT INTO "StoreRoles" ("Id", "StoreDataId", "Role", "Permissions") '
            "VALUES ($1, $2, $3, $4)",
            rid,
            store,
            name,
            permissions,
        )

    async def member(self, uid: str, store: str, role: str) -> None:
        await self.conn.execute(
            'INSERT INTO "UserStore" ("ApplicationUserId", "StoreDataId", "Role") '
            "VALUES ($1, $2, $3)",
            uid,
            store,
            role,
        )

    async def key(
        self,
        text: str,
        uid: str | None,
        label: str | None,
        *,
        blob2: str | None = None,
        blob: bytes | None = None,
        type_: int = PERMANENT,
        store: str | None = None,
    ) -> None:
        await self.conn.execute(
            'INSERT INTO "ApiKeys" ("Id", "UserId", "Label", "Type", "Blob", "Blob2", "StoreId") '
            "VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7)",
            text,
            uid,
            label,
            type_,
            blob,
            blob2,
            store,
        )


async def btcpay_database(url: str) -> BTCPayDatabase:
    conn = await asyncpg.connect(url)
    await conn.execute(SCHEMA)
    return BTCPayDatabase(conn)
