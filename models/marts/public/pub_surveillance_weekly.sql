{#- fct_surveillance_weekly for publication: cases and deaths from 1 to the small-cell threshold
    minus 1 are masked (NULL), with the complementary cells that keep them from being
    recovered from published totals over org units or periods
    (macros/small_cell_suppression.sql); the attack rate goes with the cases. -#}
with surveillance as (

    select * from {{ ref('fct_surveillance_weekly') }}

),

masks as (

    {{ hp_public_masks('pub_surveillance_weekly') }}

)

select
    s.disease,
    s.disease_name,
    s.org_unit_id,
    s.org_unit_level,
    s.period_id,
    s.week_start_date,
    s.week_end_date,
    case when mc.is_masked then null else s.cases end as cases,
    case when md.is_masked then null else s.deaths end as deaths,
    s.population,
    case when mc.is_masked then null else s.cases_per_100k end as cases_per_100k,
    s.reports_received,
    s.reports_expected,
    s.reporting_completeness,
    s.is_immediately_notifiable,
    coalesce(mc.is_masked, false) as is_cases_suppressed,
    coalesce(md.is_masked, false) as is_deaths_suppressed,
    coalesce(mc.is_masked, false) or coalesce(md.is_masked, false) as is_suppressed
from surveillance as s
left join masks as mc
    on mc.measure = 'cases'
    and mc.key_1 = s.disease
    and mc.org_unit_id = s.org_unit_id
    and mc.period_id = s.period_id
left join masks as md
    on md.measure = 'deaths'
    and md.key_1 = s.disease
    and md.org_unit_id = s.org_unit_id
    and md.period_id = s.period_id
