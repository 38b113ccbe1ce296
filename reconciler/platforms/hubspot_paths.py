"""Where each HubSpot API the client uses lives, per API generation (`hubspot.api_version`).

`legacy`: CRM Contacts v3, Lists v3, Properties v3 and Communication Preferences v3 (HubSpot ends
their support in September 2027). `2026-03`: HubSpot's date-based versions, whose CRM paths carry
the version after the API name and whose communication preferences are v4-shaped (statuses by
email, `statusState`). Paths checked against HubSpot's public OpenAPI collection
(github.com/HubSpot/HubSpot-public-api-spec-collection, `PublicApiSpecs/CRM/Contacts/Rollouts/424/2026-03/contacts.json`,
`CRM/Lists/Rollouts/144891/2026-03/lists.json`, `CRM/Properties/Rollouts/145899/2026-03/properties.json`,
`Communication Preferences/Subscriptions/Rollouts/176901/2026-03/subscriptions.json`); the CRM
request and answer shapes of 2026-03 are those of v3.
"""

from __future__ import annotations

from dataclasses import dataclass

from reconciler.errors import ConfigError
from reconciler.settings import HUBSPOT_API_VERSIONS

LEGACY = "legacy"
DATED_2026_03 = "2026-03"


@dataclass(frozen=True, slots=True)
class ApiPaths:
    version: str
    contacts: str  # CRM contacts objects (batch read/create/update, search)
    lists: str  # Lists (get by ids, memberships)
    properties: str  # contact property definitions
    prefs: str  # communication preferences

    @property
    def dated(self) -> bool:
        """True for a date-based version: v4-shaped statuses instead of v3 subscribe/unsubscribe."""
        return self.version != LEGACY

    @property
    def search(self) -> str:
        return f"{self.contacts}/search"


API_PATHS = {
    LEGACY: ApiPaths(LEGACY, "/crm/v3/objects/contacts", "/crm/v3/lists", "/crm/v3/properties/contacts",
                     "/communication-preferences/v3"),
    DATED_2026_03: ApiPaths(DATED_2026_03, "/crm/objects/2026-03/contacts", "/crm/lists/2026-03",
                            "/crm/properties/2026-03/contacts", "/communication-preferences/2026-03"),
}
assert set(API_PATHS) == set(HUBSPOT_API_VERSIONS), "every configurable API version has its paths"


def api_paths(version: str) -> ApiPaths:
    """The paths of `version`; a ConfigError naming the choices for any other value."""
    try:
        return API_PATHS[version]
    except KeyError:
        raise ConfigError([f"hubspot.api_version: {version!r} is not one of {', '.join(HUBSPOT_API_VERSIONS)}"]) from None
