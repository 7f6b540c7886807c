{#- MUAC and WASH screenings of children 6-59 months (Kobo), one row per screening, with the
    org unit of the screening site's facility. -#}
select
    n.source_name || ':' || n.submission_id as submission_key,
    n.source_name,
    o.org_unit_id,
    n.screening_date,
    n.child_sex,
    n.child_age_months,
    n.muac_mm,
    n.muac_status,
    n.is_referred,
    n.has_oedema,
    n.has_improved_water_source,
    n.has_improved_sanitation
from {{ ref('stg_kobo__nutrition_screenings') }} as n
join {{ ref('int_org_units') }} as o on o.code = n.org_unit_code
