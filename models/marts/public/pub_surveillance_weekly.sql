{#- fct_surveillance_weekly for publication: cases and deaths from 1 to the small-cell threshold
    minus 1 are masked (NULL), with complementary masking along the org-unit hierarchy
    (macros/small_cell_suppression.sql); the attack rate goes with the cases. -#}
with surveillance as (

    select * from {{ ref('fct_surveillance_weekly') }}

),

masked_cases as (

    {{ hp_masked_cells('surveillance', ['disease', 'period_id'], 'cases', ref('dim_org_unit')) }}

),

masked_deaths as (

    {{ hp_masked_cells('surveillance', ['disease', 'period_id'], 'deaths', ref('dim_org_unit')) }}

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
left join masked_cases as mc
    on mc.org_unit_id = s.org_unit_id
    and mc.disease = s.disease
    and mc.period_id = s.period_id
left join masked_deaths as md
    on md.org_unit_id = s.org_unit_id
    and md.disease = s.disease
    and md.period_id = s.period_id
