{#- Which org units belong to which group, from each group's member list (DHIS2 keeps
    membership on the group). -#}
select distinct
    member.org_unit_group_id,
    member.org_unit_id
from (
    select
        org_unit_group_id,
        {{ hp_unnest_json_text_array('org_unit_ids') }} as org_unit_id
    from {{ ref('stg_dhis2__organisation_unit_groups') }}
    where org_unit_ids is not null
) as member
