"""The actor of a request or task: who acts, in which clinic, with which roles and token scopes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tenants.enums import PATIENT_DATA_ROLES, Role

if TYPE_CHECKING:
    from saas.accounts.models import User
    from tenants.models import ApiToken, Tenant


_ROLE_PRECEDENCE = (
    Role.CLINIC_ADMIN,
    Role.CLINIC_STAFF,
    Role.REFERRING_PHYSICIAN,
    Role.BILLING_ADMIN,
    Role.RADIOLOGIST,
)


@dataclass(frozen=True)
class Actor:
    user: User | None = None
    token: ApiToken | None = None
    # The clinic the person is working in now (tenant switcher); a token's own tenant.
    active_tenant: Tenant | None = None
    # Every clinic this actor may act in, with its roles there.
    roles_by_tenant: dict[int, frozenset[str]] = field(default_factory=dict)
    tenants: tuple[Tenant, ...] = ()
    scopes: frozenset[str] = frozenset()
    source_ip: str | None = None

    @property
    def is_authenticated(self) -> bool:
        return self.user is not None or self.token is not None

    @property
    def is_platform_admin(self) -> bool:
        return self.user is not None and self.user.is_platform_admin

    @property
    def id(self) -> int | None:
        return self.user.pk if self.user is not None else None

    @property
    def username(self) -> str:
        if self.user is not None:
            return self.user.get_username()
        if self.token is not None:
            return f"token:{self.token.prefix}"
        return ""

    @property
    def context_tenant_ids(self) -> frozenset[int]:
        """Tenants whose rows this actor's transaction may see (the database context)."""
        ids = {tenant_id for tenant_id, roles in self.roles_by_tenant.items() if Role.RADIOLOGIST in roles}
        if self.active_tenant is not None:
            ids.add(self.active_tenant.pk)
        return frozenset(ids)

    def roles_in(self, tenant_id: int | None) -> frozenset[str]:
        if tenant_id is None:
            return frozenset()
        return self.roles_by_tenant.get(tenant_id, frozenset())

    @property
    def active_role(self) -> str:
        if self.active_tenant is None:
            return Role.PLATFORM_ADMIN.value if self.is_platform_admin else ""
        return self.role_in(self.active_tenant.pk)

    def role_in(self, tenant_id: int, *, patient_data: bool = False) -> str:
        """The role this actor acts in within one clinic ("" for none), whichever clinic is active.

        With `patient_data`, the role that grants access to patient data there (a billing administrator
        who also holds a reading credential reads studies as a radiologist).
        """
        roles = self.roles_in(tenant_id)
        if patient_data:
            roles = roles & PATIENT_DATA_ROLES
        # A person with a clinic role and a credential acts in their clinic role by default.
        for role in _ROLE_PRECEDENCE:
            if role in roles:
                return role.value
        return ""

    def has_role(self, tenant_id: int | None, *roles: str) -> bool:
        return bool(self.roles_in(tenant_id) & set(roles))

    def may_see_patient_data(self, tenant_id: int | None) -> bool:
        return bool(self.roles_in(tenant_id) & PATIENT_DATA_ROLES)

    def has_scope(self, scope: str) -> bool:
        return self.token is None or scope in self.scopes


ANONYMOUS = Actor()
