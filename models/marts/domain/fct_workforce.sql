{#- Staffing returns: one row per source, facility, quarter and cadre. is_core_cadre marks
    the doctors, nurses and midwives of the SDG 3.c density threshold (WHO NHWA). -#}
select
    w.source_name,
    o.org_unit_id,
    w.period_id,
    w.cadre,
    w.cadre in ('medical_doctor', 'nurse', 'midwife') as is_core_cadre,
    w.approved_posts,
    w.filled_posts,
    w.vacant_posts,
    w.staff_joined,
    w.staff_left,
    w.trained_in_quarter,
    w.supervision_visits
from {{ ref('stg_tabular__workforce') }} as w
join {{ ref('int_org_units') }} as o on o.code = w.org_unit_code
